from django.urls import path

from gpu_instances.apis import InstanceApi
from jobs import apis

urlpatterns = [
    path("batches/", apis.BatchListCreateApi.as_view(), name="batch-list"),
    path("batches/<uuid:batch_id>/", apis.BatchDetailApi.as_view(), name="batch-detail"),
    path("batches/<uuid:batch_id>/jobs/", apis.BatchJobsApi.as_view(), name="batch-jobs"),
    path("batches/<uuid:batch_id>/items/", apis.BatchAppendApi.as_view(), name="batch-items"),
    path("batches/<uuid:batch_id>/cancel/", apis.BatchCancelApi.as_view(), name="batch-cancel"),
    path("batches/<uuid:batch_id>/retry/", apis.BatchRetryApi.as_view(), name="batch-retry"),
    path("batches/<uuid:batch_id>/budget/", apis.BatchBudgetApi.as_view(), name="batch-budget"),
    path("batches/<uuid:batch_id>/deadline/", apis.BatchDeadlineApi.as_view(), name="batch-deadline"),
    path("alerts/", apis.AlertListApi.as_view(), name="alert-list"),
    path("jobs/<uuid:job_id>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/retry/", apis.JobRetryApi.as_view(), name="job-retry"),
    path("jobs/<uuid:job_id>/video", apis.JobVideoApi.as_view(), name="job-video"),
    path("jobs/<uuid:job_id>/poster", apis.JobPosterApi.as_view(), name="job-poster"),
    path("instance/", InstanceApi.as_view(), name="instance"),
]
