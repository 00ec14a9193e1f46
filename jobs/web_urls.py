"""The web pages (the JSON API lives under /api/, in jobs/urls.py)."""

from django.urls import path

from jobs import views

app_name = "web"

urlpatterns = [
    path("", views.batch_list, name="batch-list"),
    path("batches/new/", views.batch_new, name="batch-new"),
    path("batches/<uuid:batch_id>/", views.batch_detail, name="batch-detail"),
    path("batches/<uuid:batch_id>/cancel/", views.batch_cancel, name="batch-cancel"),
    path("batches/<uuid:batch_id>/retry/", views.batch_retry, name="batch-retry"),
    path("batches/<uuid:batch_id>/budget/", views.batch_budget, name="batch-budget"),
    path("batches/<uuid:batch_id>/deadline/", views.batch_deadline, name="batch-deadline"),
    path("batches/<uuid:batch_id>/download.zip", views.batch_download, name="batch-download"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/retry/", views.job_retry, name="job-retry"),
    path("jobs/<uuid:job_id>/input", views.job_input_image, name="job-input"),
]
