"""The JSON API: thin views that parse, call one service or selector, and serialize."""

import hashlib
import json
from collections.abc import Mapping

from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from gpu_instances import exposure
from jobs import selectors, services
from jobs.downloads import serve_stored
from jobs.eta import batch_eta
from jobs.forms import batch_spec_from_upload, parse_params_json, parse_seeds_per_image, read_text_upload
from jobs.image_sources import shown_url
from jobs.intake import BatchValidationError, UploadedFile, parse_deadline
from jobs.models import Job, Provider
from jobs.upload_limits import BODY_LIMIT_ERRORS, BoundedJSONParser, body_limit_error, upload_errors


def exception_handler(exc, context):
    """Errors are JSON with a human-readable `message`; validation errors list each problem in `errors`."""
    if isinstance(exc, BODY_LIMIT_ERRORS):
        # Django refuses the body when DRF first reads it: the same answer as every other bad input.
        exc = BatchValidationError([body_limit_error(exc)])
    if isinstance(exc, BatchValidationError):
        return Response({"message": f"The batch was rejected: {len(exc.errors)} problem(s). Nothing was created.",
                         "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, services.ApplicationError):
        return Response({"message": str(exc)}, status=status.HTTP_409_CONFLICT)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, APIException):
        detail = response.data
        if isinstance(detail, dict) and "detail" in detail:
            response.data = {"message": str(detail["detail"])}
        else:
            response.data = {"message": "Invalid request.", "errors": detail}
    return response


# --- serializers -------------------------------------------------------------------------


class JobOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    batch = serializers.UUIDField(source="batch.uuid")
    provider = serializers.CharField()
    status = serializers.CharField()
    phase = serializers.SerializerMethodField()
    progress = serializers.FloatField()
    attempts = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    input_name = serializers.CharField()
    image_url = serializers.SerializerMethodField()
    prompt = serializers.CharField()
    negative_prompt = serializers.CharField()
    seed = serializers.IntegerField()
    params = serializers.JSONField()
    error = serializers.SerializerMethodField()
    paused_reason = serializers.SerializerMethodField()
    fallback_from = serializers.CharField()
    fallback_reason = serializers.SerializerMethodField()
    output_url = serializers.SerializerMethodField()
    poster_url = serializers.SerializerMethodField()
    video = serializers.SerializerMethodField()
    cost_usd = serializers.DecimalField(max_digits=10, decimal_places=4, allow_null=True)
    wasted_usd = serializers.DecimalField(max_digits=10, decimal_places=4)
    queue_position = serializers.IntegerField(allow_null=True)
    remote_started_at = serializers.DateTimeField(allow_null=True)
    generation_seconds = serializers.FloatField(allow_null=True)
    instance = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def _shown(self, text: str, job) -> str:
        """Messages may quote the GPU's address: whole for staff only."""
        request = self.context.get("request")
        return exposure.shown(text, request.user if request is not None else None,
                              job.instance if job.instance_id else None)

    def get_phase(self, job) -> str:
        """`status`, except `next_on_gpu` for a running vastai job queued inside SwarmUI behind another."""
        phases = self.context.get("phases")
        return (phases if phases is not None else selectors.job_phases([job])).get(job.pk, job.status)

    def get_image_url(self, job) -> str | None:
        """Where an item by URL takes its image from, without the query string (it may be a signature)."""
        return shown_url(job.image_url) if job.image_url else None

    def get_error(self, job) -> dict | None:
        return {"code": job.error_code, "message": self._shown(job.error_message, job)} if job.error_code else None

    def get_paused_reason(self, job) -> str:
        return self._shown(job.paused_reason, job)

    def get_fallback_reason(self, job) -> str:
        return self._shown(job.fallback_reason, job)

    def _url(self, job, name) -> str | None:
        request = self.context.get("request")
        url = reverse(name, args=[job.uuid])
        return request.build_absolute_uri(url) if request else url

    def get_output_url(self, job) -> str | None:
        return self._url(job, "job-video") if job.output_video else None

    def get_poster_url(self, job) -> str | None:
        return self._url(job, "job-poster") if job.poster else None

    def get_video(self, job) -> dict | None:
        if not job.output_video:
            return None
        return {"frames": job.video_frames, "fps": job.video_fps, "duration": job.video_duration,
                "codec": job.video_codec}

    def get_instance(self, job) -> int | None:
        return job.instance.vast_id if job.instance_id and job.instance else None


class BatchOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="uuid")
    name = serializers.CharField()
    provider = serializers.CharField()
    preset = serializers.CharField()
    params = serializers.JSONField()
    status = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    total = serializers.IntegerField(source="n_total")
    progress = serializers.SerializerMethodField()
    cost_usd = serializers.SerializerMethodField()
    wasted_usd = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    cancel_requested_at = serializers.DateTimeField(allow_null=True)
    budget_usd = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True)
    fallback = serializers.CharField(source="fallback_policy")
    fallback_after = serializers.IntegerField(allow_null=True)
    deadline = serializers.DateTimeField(allow_null=True)
    deadline_note = serializers.CharField()
    webhook_url = serializers.CharField()
    webhook_events = serializers.CharField()

    def get_status(self, batch) -> str:
        return selectors.batch_status(batch)

    def get_counts(self, batch) -> dict:
        return selectors.batch_counts(batch)

    def get_progress(self, batch) -> float:
        return selectors.batch_progress(batch, self.context.get("running", 0.0))

    def get_cost_usd(self, batch) -> str:
        return str(selectors.batch_cost(batch))

    def get_wasted_usd(self, batch) -> str:
        return str(selectors.batch_waste(batch))


class CostComparisonSerializer(serializers.Serializer):
    actual = serializers.DecimalField(max_digits=12, decimal_places=4)
    other_provider = serializers.CharField()
    other_estimate = serializers.DecimalField(max_digits=12, decimal_places=4)
    saving = serializers.DecimalField(max_digits=12, decimal_places=4)
    basis = serializers.CharField()


class GpuActivitySerializer(serializers.Serializer):
    phase = serializers.CharField()
    message = serializers.CharField()
    vast_id = serializers.IntegerField(allow_null=True)
    elapsed_seconds = serializers.IntegerField(allow_null=True)
    typical_seconds = serializers.IntegerField(allow_null=True)


class EtaSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    seconds = serializers.IntegerField()
    low = serializers.DateTimeField()
    high = serializers.DateTimeField()
    basis = serializers.CharField()


class BatchLiveOutputSerializer(BatchOutputSerializer):
    """One batch's state for the batch page and scripts: counts, costs, the GPU. No job list."""

    costs = serializers.SerializerMethodField()
    gpu = serializers.SerializerMethodField()
    next_on_gpu = serializers.SerializerMethodField()
    jobs_url = serializers.SerializerMethodField()
    eta = serializers.SerializerMethodField()
    deadline_moved = serializers.SerializerMethodField()

    @extend_schema_field(EtaSerializer(allow_null=True))
    def get_eta(self, batch) -> dict | None:
        eta = batch_eta(batch)
        return eta.as_json() if eta else None

    def get_deadline_moved(self, batch) -> int:
        """Jobs the deadline planner moved to fal."""
        return selectors.batch_deadline_moved(batch)

    @extend_schema_field(CostComparisonSerializer)
    def get_costs(self, batch) -> dict:
        return CostComparisonSerializer(selectors.batch_cost_comparison(batch)).data

    @extend_schema_field(GpuActivitySerializer(allow_null=True))
    def get_gpu(self, batch) -> dict | None:
        """What the GPU is doing while this vastai batch's jobs wait for it (null otherwise); no address."""
        activity = selectors.gpu_activity_for(batch)
        return GpuActivitySerializer(activity).data if activity else None

    def get_next_on_gpu(self, batch) -> int:
        """Of the `running` jobs, how many wait inside SwarmUI behind the one generating."""
        return selectors.batch_next_on_gpu(batch)

    def get_jobs_url(self, batch) -> str:
        url = reverse("batch-jobs", args=[batch.uuid])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class BatchDetailOutputSerializer(BatchLiveOutputSerializer):
    """One batch with the first page of its jobs (`jobs_page` says how many there are and where the rest
    is: `GET /api/batches/{id}/jobs/`), and the cursor for `?since=`."""

    cursor = serializers.CharField()
    jobs = serializers.SerializerMethodField()
    jobs_page = serializers.SerializerMethodField()

    @extend_schema_field(JobOutputSerializer(many=True))
    def get_jobs(self, batch) -> list:
        return JobOutputSerializer(self.context["jobs"], many=True, context=self.context).data

    @extend_schema_field(inline_serializer("JobsPage", {"count": serializers.IntegerField(),
                                                         "next": serializers.CharField(allow_null=True)}))
    def get_jobs_page(self, batch) -> dict:
        return {"count": batch.n_total, "next": self.context["jobs_next"]}


def _live_context(batch, request) -> dict:
    return {"request": request, "running": selectors.batch_running_progress(batch)}


def _batch_detail(batch, request) -> dict:
    """The batch, its counts and its first page of jobs (JOBS_PAGE_SIZE): a 10,000-job batch is not sent
    whole. The cursor is taken before the jobs are read (see selectors.change_cursor)."""
    batch.cursor = selectors.change_cursor(batch)
    jobs = list(selectors.batch_jobs(batch=batch)[:JOBS_PAGE_SIZE])
    jobs_next = None
    if batch.n_total > len(jobs):
        jobs_next = request.build_absolute_uri(reverse("batch-jobs", args=[batch.uuid]) + "?page=2")
    context = {**_live_context(batch, request), "jobs": jobs, "phases": selectors.job_phases(jobs),
               "jobs_next": jobs_next}
    return BatchDetailOutputSerializer(batch, context=context).data


JOBS_PAGE_SIZE = 50
JOBS_MAX_PAGE_SIZE = 500


class JobPagination(PageNumberPagination):
    page_size = JOBS_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = JOBS_MAX_PAGE_SIZE


# --- views -------------------------------------------------------------------------------


# The fields `POST /api/batches/` takes, and the JSON types each may have in a JSON body (multipart
# fields are always text). Anything else is refused rather than ignored: a misspelt `fallbak` must not
# quietly create a batch without the fallback its sender asked for.
TEXT = (str,)
BATCH_FIELDS = {
    "provider": TEXT, "name": TEXT, "prompt": TEXT, "preset": TEXT, "fallback": TEXT,
    "params": (str, dict), "items": (str, list),
    "seeds_per_image": (str, int), "fallback_after": (str, int), "budget_usd": (str, int, float),
    "deadline": TEXT, "webhook_url": TEXT, "webhook_events": TEXT,
    "images": (),  # files only
}
TYPE_NAMES = {str: "text", dict: "a JSON object", list: "a JSON list", int: "an integer", float: "a number"}


# `POST /api/batches/{id}/items/`: the items and how they get prompts; the rest is the batch's own.
APPEND_FIELDS = {name: BATCH_FIELDS[name] for name in ("prompt", "items", "seeds_per_image", "images")}


def _batch_fields(request, fields=BATCH_FIELDS) -> tuple[dict, list[dict]]:
    """The request's fields by name (None when absent) and the problems with their names and types."""
    if not isinstance(request.data, Mapping):  # a JSON body that is a list, a number, …
        return dict.fromkeys(fields), [{"field": "request", "message": "the body must be a JSON object or a "
                                                                       "form"}]
    errors = []
    names = set(request.data.keys()) | set(request.FILES.keys())
    for name in sorted(names - set(fields)):
        errors.append({"field": name, "message": f"unknown field; known: {', '.join(fields)}"})
    values = {}
    for name, types in fields.items():
        value = None if name == "images" or name in request.FILES else request.data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            wanted = " or ".join(TYPE_NAMES[t] for t in types)
            errors.append({"field": name, "message": f"must be {wanted}, not {type(value).__name__}"})
            value = None
        values[name] = value
    if "images" in request.data and "images" not in request.FILES:
        errors.append({"field": "images", "message": "must be uploaded files (multipart), not a field"})
    return values, errors


def _rows_text(request, value) -> tuple[str, list[dict]]:
    """`items` as an uploaded file, text, or (JSON body) the list itself."""
    if "items" in request.FILES:
        return read_text_upload(request.FILES["items"])
    if isinstance(value, list):
        return json.dumps(value), []
    return value or "", []


class BatchCreateInputSerializer(serializers.Serializer):
    """For the schema: the multipart fields `POST /api/batches/` takes."""

    provider = serializers.ChoiceField(choices=Provider.values)
    images = serializers.ListField(child=serializers.FileField(),
                                   help_text="one or more PNG/JPEG/WebP files, or ZIPs of them")
    prompt = serializers.CharField(required=False, help_text="for every item without its own prompt")
    name = serializers.CharField(required=False)
    preset = serializers.CharField(required=False, help_text="draft, standard or hd")
    params = serializers.CharField(required=False, help_text="JSON object: num_frames, fps, resolution, width, "
                                                             "height, steps, cfg, seed, negative_prompt")
    items = serializers.CharField(required=False, help_text="CSV/TSV (header: file or image_url, prompt, "
                                                            "negative_prompt, seed) or a JSON list of such objects; "
                                                            "text or a file. image_url: https:// or "
                                                            "s3://<bucket>/<key>, fetched in the background")
    seeds_per_image = serializers.IntegerField(required=False, min_value=1, max_value=16)
    budget_usd = serializers.DecimalField(required=False, max_digits=10, decimal_places=2,
                                          help_text="this batch's spending cap; work beyond it pauses")
    fallback = serializers.ChoiceField(required=False, choices=["never", "unrecoverable", "attempts"],
                                       help_text="vastai only: move jobs to fal when the GPU is unavailable for "
                                                 "`fallback_after` minutes, or after `fallback_after` failed attempts")
    fallback_after = serializers.IntegerField(required=False)
    deadline = serializers.DateTimeField(required=False, help_text="vastai only: finish by this ISO 8601 time "
                                                                   "(with timezone); jobs move to fal as needed")
    webhook_url = serializers.URLField(required=False, help_text="https URL that gets a signed POST when the "
                                                                 "batch finishes")
    webhook_events = serializers.ChoiceField(required=False, choices=["batch", "batch,job"],
                                             help_text="batch (default), or batch,job for every job as well")


class BatchListCreateApi(APIView):
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(responses=BatchOutputSerializer(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.batch_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(BatchOutputSerializer(page, many=True).data)

    @extend_schema(request={"multipart/form-data": BatchCreateInputSerializer},
                   responses={201: BatchDetailOutputSerializer})
    def post(self, request):
        values, errors = _batch_fields(request)  # parses the body
        refused = upload_errors(request)  # parsing stopped at a limit: say only that
        if refused:
            raise BatchValidationError(refused)
        raw_params, param_errors = parse_params_json(values["params"])
        seeds, seed_errors = parse_seeds_per_image(values["seeds_per_image"])
        rows_text, row_errors = _rows_text(request, values["items"])
        files = [UploadedFile.from_django(f) for f in request.FILES.getlist("images")]
        # Unpacks ZIPs among `images` and raises one BatchValidationError with every problem.
        spec = batch_spec_from_upload(
            files=files, errors=errors + param_errors + seed_errors + row_errors,
            provider=values["provider"] or "", name=values["name"] or "", preset=values["preset"] or None,
            params=raw_params, prompt=values["prompt"] or "", rows_text=rows_text, seeds_per_image=seeds,
            budget_usd=values["budget_usd"], fallback=values["fallback"], fallback_after=values["fallback_after"],
            deadline=values["deadline"], webhook_url=values["webhook_url"], webhook_events=values["webhook_events"],
        )
        created = services.batch_create(owner=request.user, spec=spec)
        batch = selectors.batch_get(user=request.user, batch_uuid=created.uuid)
        data = _batch_detail(batch, request)
        if created.webhook_secret:
            data["webhook_secret"] = created.webhook_secret  # this once: it is never shown again
        return Response(data, status=status.HTTP_201_CREATED)


class BatchAppendInputSerializer(serializers.Serializer):
    """For the schema: what `POST /api/batches/{id}/items/` takes (multipart, or the same as JSON)."""

    images = serializers.ListField(child=serializers.FileField(), required=False,
                                   help_text="PNG/JPEG/WebP files, or ZIPs of them")
    items = serializers.CharField(required=False, help_text="rows as for creation: file or image_url, prompt, "
                                                            "negative_prompt, seed")
    prompt = serializers.CharField(required=False, help_text="for every item without its own prompt")
    seeds_per_image = serializers.IntegerField(required=False, min_value=1, max_value=16)


class BatchAppendOutputSerializer(serializers.Serializer):
    batch = serializers.UUIDField()
    appended = serializers.IntegerField()
    first_position = serializers.IntegerField()
    total = serializers.IntegerField()
    replayed = serializers.BooleanField()
    jobs = JobOutputSerializer(many=True)


def _idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "")
    if len(key) > 200 or not key.isprintable():
        raise BatchValidationError([{"field": "Idempotency-Key", "message": "must be at most 200 printable "
                                                                            "characters"}])
    return key.strip()


def _request_fingerprint(values: dict, files: list[UploadedFile]) -> str:
    """What a request asked for, so a reused Idempotency-Key with other items is told apart from a retry."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    for upload in files:
        digest.update(b"\0" + upload.name.encode() + b"\0" + hashlib.sha256(upload.read()).digest())
    return digest.hexdigest()


class BatchAppendApi(APIView):
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    @extend_schema(request={"multipart/form-data": BatchAppendInputSerializer},
                   responses={201: BatchAppendOutputSerializer, 200: BatchAppendOutputSerializer},
                   parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                                                description="any text up to 200 characters, new for each "
                                                            "distinct request; a retry sends the same one")])
    def post(self, request, batch_id):
        """Appends items (uploads and/or by URL) after the batch's last one; all or nothing. The batch's
        provider, parameters and caps apply to them. Send `Idempotency-Key: <any text>` so that a retry of
        the same request answers 200 with the first one's jobs instead of appending them again."""
        batch = selectors.batch_get_owned(user=request.user, batch_uuid=batch_id)
        key = _idempotency_key(request)
        values, errors = _batch_fields(request, APPEND_FIELDS)
        refused = upload_errors(request)
        if refused:
            raise BatchValidationError(refused)
        seeds, seed_errors = parse_seeds_per_image(values["seeds_per_image"])
        rows_text, row_errors = _rows_text(request, values["items"])
        files = [UploadedFile.from_django(f) for f in request.FILES.getlist("images")]
        spec = batch_spec_from_upload(
            files=files, errors=errors + seed_errors + row_errors, provider=batch.provider, name=batch.name,
            preset=batch.preset or None, params=batch.params, prompt=values["prompt"] or "", rows_text=rows_text,
            seeds_per_image=seeds, budget_usd=batch.budget_usd, fallback=batch.fallback_policy,
            fallback_after=batch.fallback_after,
        )
        fingerprint = _request_fingerprint({**values, "items": rows_text}, files) if key else ""
        record, jobs, replayed = services.batch_append(batch=batch, spec=spec, idempotency_key=key,
                                                       fingerprint=fingerprint)
        body = {"batch": batch.uuid, "appended": len(jobs), "first_position": jobs[0].position if jobs else 0,
                "total": batch.jobs.count(), "replayed": replayed,
                "jobs": JobOutputSerializer(jobs, many=True, context={"request": request,
                                                                      "phases": selectors.job_phases(jobs)}).data}
        return Response(body, status=status.HTTP_200_OK if replayed else status.HTTP_201_CREATED)


class BatchDetailApi(APIView):
    @extend_schema(responses=BatchDetailOutputSerializer)
    def get(self, request, batch_id):
        return Response(_batch_detail(selectors.batch_get(user=request.user, batch_uuid=batch_id), request))


class BatchJobsApi(APIView):
    class InputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Job.Status.values, required=False)
        since = serializers.RegexField(selectors.CURSOR_PATTERN, required=False, max_length=22_000,
                                       help_text="the `cursor` of an earlier answer")
        page = serializers.IntegerField(required=False, min_value=1)
        page_size = serializers.IntegerField(required=False, min_value=1, max_value=JOBS_MAX_PAGE_SIZE)

    CHANGES = inline_serializer("BatchChanges", {
        "batch": BatchLiveOutputSerializer(), "cursor": serializers.CharField(),
        "resync": serializers.BooleanField(), "results": JobOutputSerializer(many=True)})

    @extend_schema(parameters=[InputSerializer], responses={200: JobOutputSerializer(many=True)})
    def get(self, request, batch_id):
        """The batch's jobs in order, a page at a time, optionally of one `status`.

        With `since` (the `cursor` of an earlier answer): the batch's counts and state, and only the jobs
        that changed since — a response of the shape {batch, cursor, resync, results}. `resync: true`
        means too much changed to send: read the pages again. A job can come twice; never zero times.
        """
        batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
        query = self.InputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        status_filter, since = query.validated_data.get("status"), query.validated_data.get("since")
        if since is not None:
            # `status` does not narrow the changes: a job that just left the status is a change too.
            cursor, changed = selectors.batch_changes(batch=batch, since=since)
            running = [job for job in (changed or []) if job.status == Job.Status.RUNNING]
            context = {**_live_context(batch, request), "phases": selectors.job_phases(running) if running else {}}
            return Response({
                "batch": BatchLiveOutputSerializer(batch, context=context).data, "cursor": cursor,
                "resync": changed is None,
                "results": JobOutputSerializer(changed or [], many=True, context=context).data,
            })
        paginator = JobPagination()
        cursor = selectors.change_cursor(batch)
        page = paginator.paginate_queryset(selectors.batch_jobs(batch=batch, status=status_filter), request, view=self)
        response = paginator.get_paginated_response(
            JobOutputSerializer(page, many=True, context={"request": request,
                                                          "phases": selectors.job_phases(page)}).data)
        response.data["cursor"] = cursor
        return response


ACTION_RESPONSE = inline_serializer("ActionResult", {"changed": serializers.IntegerField()})


class BatchCancelApi(APIView):
    @extend_schema(request=None, responses=ACTION_RESPONSE)
    def post(self, request, batch_id):
        batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
        return Response({"changed": services.batch_cancel(batch=batch)})


class BatchRetryApi(APIView):
    @extend_schema(request=None, responses=ACTION_RESPONSE)
    def post(self, request, batch_id):
        batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
        return Response({"changed": services.batch_retry_failed(batch=batch)})


class BatchBudgetApi(APIView):
    class InputSerializer(serializers.Serializer):
        budget_usd = serializers.DecimalField(max_digits=10, decimal_places=2, allow_null=True, min_value=0)

    @extend_schema(request=InputSerializer, responses=BatchDetailOutputSerializer)
    def post(self, request, batch_id):
        """Sets or (with null) removes the batch's cap. Raising it resumes paused work."""
        batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.batch_set_budget(batch=batch, budget_usd=data.validated_data["budget_usd"])
        return Response(_batch_detail(selectors.batch_get(user=request.user, batch_uuid=batch_id), request))


class BatchDeadlineApi(APIView):
    class DeadlineInputSerializer(serializers.Serializer):
        deadline = serializers.CharField(allow_null=True, help_text="ISO 8601 with timezone, or null to remove it")

    @extend_schema(request=DeadlineInputSerializer, responses=BatchDetailOutputSerializer)
    def post(self, request, batch_id):
        """Sets or (with null) removes the batch's deadline. Jobs already moved to fal stay there."""
        batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
        if not isinstance(request.data, Mapping) or "deadline" not in request.data:
            raise serializers.ValidationError({"deadline": ["give a deadline (ISO 8601 with a timezone) or null to "
                                                            "remove it"]})
        raw = request.data.get("deadline")
        if raw is not None and not isinstance(raw, str):
            raise serializers.ValidationError({"deadline": ["must be text (ISO 8601) or null"]})
        deadline, errors = parse_deadline(raw, provider=batch.provider)
        if errors:
            raise serializers.ValidationError({"deadline": [error["message"] for error in errors]})
        services.batch_set_deadline(batch=batch, deadline=deadline)
        return Response(_batch_detail(selectors.batch_get(user=request.user, batch_uuid=batch_id), request))


class AlertOutputSerializer(serializers.Serializer):
    kind = serializers.CharField()
    message = serializers.CharField()
    batch = serializers.UUIDField(source="batch.uuid", allow_null=True)
    created_at = serializers.DateTimeField()


class AlertListApi(APIView):
    @extend_schema(responses=AlertOutputSerializer(many=True))
    def get(self, request):
        """Open alerts: genhub-wide ones (GPU down, monthly budget) and those about your batches."""
        return Response(AlertOutputSerializer(selectors.alerts_open(user=request.user), many=True).data)


class JobDetailApi(APIView):
    @extend_schema(responses=JobOutputSerializer)
    def get(self, request, job_id):
        job = selectors.job_get(user=request.user, job_uuid=job_id)
        return Response(JobOutputSerializer(job, context={"request": request}).data)


class JobCancelApi(APIView):
    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request, job_id):
        job = selectors.job_get(user=request.user, job_uuid=job_id)
        if not services.job_cancel(job=job):
            raise services.ApplicationError(f"job {job.uuid} is {job.status}: only unfinished jobs can be cancelled")
        job.refresh_from_db()
        return Response(JobOutputSerializer(job, context={"request": request}).data)


class JobRetryApi(APIView):
    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request, job_id):
        job = selectors.job_get(user=request.user, job_uuid=job_id)
        if not services.job_retry(job=job):
            raise services.ApplicationError(f"job {job.uuid} is {job.status}: only failed or cancelled jobs can be "
                                            "retried")
        job.refresh_from_db()
        return Response(JobOutputSerializer(job, context={"request": request}).data)


class _JobFileApi(APIView):
    """Serves a stored file of the job to its owner only (media is never public)."""

    field = ""
    content_type = ""

    @extend_schema(responses={(200, "application/octet-stream"): bytes, (206, "application/octet-stream"): bytes})
    def get(self, request, job_id):
        """The whole file, or with `Range: bytes=…` one part of it (206) for seeking and resuming; HEAD too."""
        job = selectors.job_get(user=request.user, job_uuid=job_id)
        stored = getattr(job, self.field)
        if not stored:
            raise Http404("this job has no such file yet")
        suffix = "mp4" if self.field == "output_video" else "jpg"
        return serve_stored(request, stored.name, content_type=self.content_type,
                            filename=f"{job.input_name.rsplit('.', 1)[0]}-{job.seed}.{suffix}",
                            cache_control="private, max-age=3600")


class JobVideoApi(_JobFileApi):
    field, content_type = "output_video", "video/mp4"


class JobPosterApi(_JobFileApi):
    field, content_type = "poster", "image/jpeg"

