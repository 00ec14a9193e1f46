import uuid

from django.conf import settings
from django.db import models


class Provider(models.TextChoices):
    FAL = "fal", "fal.ai"
    VASTAI = "vastai", "vast.ai GPU"


class BatchRun(models.Model):
    """One bulk submission. Its status is derived from its jobs' counts (`BatchCounts`, kept by triggers)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches")
    name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    preset = models.CharField(max_length=32, blank=True)
    params = models.JSONField(default=dict)  # resolved generation parameters shared by all items
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Fallback(models.TextChoices):
        NEVER = "never"
        UNRECOVERABLE = "unrecoverable"  # after the vast GPU has been unavailable for `fallback_after` minutes
        ATTEMPTS = "attempts"  # per job, after `fallback_after` failed vast attempts

    # Spend control: the batch's own cap (USD, optional) and what to do when the GPU lets it down.
    budget_usd = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    fallback_policy = models.CharField(max_length=16, choices=Fallback.choices, default=Fallback.NEVER)
    fallback_after = models.PositiveIntegerField(null=True, blank=True)

    # Planning (issue 12): finish by `deadline` by moving the fewest waiting GPU jobs to fal
    # (`jobs.deadline`); `deadline_note` is what that planner last had to say (a cap held a move back, …).
    deadline = models.DateTimeField(null=True, blank=True)
    deadline_note = models.CharField(max_length=300, blank=True)

    class WebhookEvents(models.TextChoices):
        BATCH = "batch", "when the batch finishes"
        BATCH_AND_JOBS = "batch,job", "when the batch finishes and when each job finishes"

    # Signed POSTs to the owner's script (`jobs.batch_events`). The secret signs them; it is shown once,
    # in the answer that created the batch, and never again (not in the API, the admin or a page).
    webhook_url = models.CharField(max_length=2000, blank=True)
    webhook_events = models.CharField(max_length=16, choices=WebhookEvents.choices, default=WebhookEvents.BATCH)
    webhook_secret = models.CharField(max_length=64, blank=True)
    # Set (compare-and-set) when the "batch finished" delivery was queued; cleared when a retry reopens it.
    finished_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # "Batches" everywhere: the web pages, the API and the admin.
        verbose_name = "batch"
        verbose_name_plural = "batches"

    def __str__(self):
        return self.name or f"batch {self.pk}"

    @property
    def wants_job_events(self) -> bool:
        return self.webhook_events == self.WebhookEvents.BATCH_AND_JOBS


class Job(models.Model):
    """One image + prompt → one video."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        WAITING_FOR_GPU = "waiting_for_gpu"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        PAUSED = "paused"  # held back by a budget cap; resumes when the cap allows
        # Generated and paid, but genhub could not store the clip yet (a full disk, a storage error). It
        # is kept in `pending_result` and stored again by the pump; it is never generated again.
        STORING = "storing"
        # An item given by URL whose image genhub has not fetched yet (jobs/fetching.py): not dispatched
        # until it is; an image that cannot be had fails the job with `image_unavailable`.
        FETCHING = "fetching"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # Work a pump or the GPU has to do now.
    ACTIVE = (Status.QUEUED, Status.WAITING_FOR_GPU, Status.RUNNING, Status.STORING)
    UNFINISHED = ACTIVE + (Status.PAUSED, Status.FETCHING)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    batch = models.ForeignKey(BatchRun, on_delete=models.CASCADE, related_name="jobs")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    provider = models.CharField(max_length=16, choices=Provider.choices)
    position = models.PositiveIntegerField(default=0)  # order within the batch

    input_image = models.FileField(upload_to="inputs/")  # empty while the image is being fetched
    # Where the image comes from when it was given by URL (https:// or s3://); empty for an upload.
    image_url = models.TextField(blank=True)
    input_name = models.CharField(max_length=255)
    input_sha256 = models.CharField(max_length=64)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    seed = models.BigIntegerField()
    params = models.JSONField(default=dict)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Counts every claim and is never reset (attempts are, by a retry or a fallback): it names one
    # attempt, so a late report from an attempt already given up on never touches a later one.
    claims = models.PositiveIntegerField(default=0)

    # fal: request_id + the status/response/cancel URLs it returned; SwarmUI: its request id.
    external_id = models.CharField(max_length=128, blank=True, db_index=True)
    provider_ref = models.JSONField(default=dict, blank=True)
    # Blocking providers: the remote work (provider_ref) of an attempt whose worker was lost. The next
    # attempt takes it over and, when that work was finished on the same instance, collects its output
    # instead of generating the clip again.
    lost_work = models.JSONField(default=dict, blank=True)
    # Set when a pump hands a claimed job to a worker task; the first delivery of that task clears it,
    # so a duplicate delivery finds nothing to take.
    dispatch_token = models.CharField(max_length=32, blank=True)
    # The worker process running it (genhub/processes.py), so a worker that died on this machine is
    # recognised at once rather than when its heartbeats have been missing for GENHUB_STALE_JOB_SECONDS.
    worker = models.CharField(max_length=128, blank=True)
    instance = models.ForeignKey(
        "gpu_instances.GpuInstance", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )

    output_video = models.FileField(upload_to="outputs/", blank=True)
    poster = models.FileField(upload_to="posters/", blank=True)
    video_frames = models.PositiveIntegerField(null=True, blank=True)
    video_fps = models.FloatField(null=True, blank=True)
    video_duration = models.FloatField(null=True, blank=True)
    video_codec = models.CharField(max_length=32, blank=True)

    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    paused_reason = models.CharField(max_length=300, blank=True)
    # Set when the batch's fallback policy moved the job from the GPU to fal.
    fallback_from = models.CharField(max_length=16, blank=True)
    fallback_reason = models.CharField(max_length=300, blank=True)
    # Every paid attempt, delivered or not; `wasted_usd` is the part that produced no delivered clip.
    cost_usd = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    wasted_usd = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    # A paid result waiting to be stored (status `storing`): where its bytes were spooled, where the
    # provider still serves it, its provider facts and what it cost. Emptied once it is stored.
    pending_result = models.JSONField(default=dict, blank=True)
    # Polled providers: when the remote started the request (fal: first IN_PROGRESS; time in fal's own
    # queue does not count towards the deadline), its place in that queue while it waits, and the
    # failed fetches of a completed request's result (retried with backoff, never resubmitted).
    remote_started_at = models.DateTimeField(null=True, blank=True)
    queue_position = models.PositiveIntegerField(null=True, blank=True)
    result_fetch_failures = models.PositiveSmallIntegerField(default=0)
    next_check_at = models.DateTimeField(null=True, blank=True)
    generation_seconds = models.FloatField(null=True, blank=True)
    # Set when the "job finished" webhook delivery was queued (batches with `webhook_events=batch,job`).
    notified_at = models.DateTimeField(null=True, blank=True)

    # When the job last changed in a way its card shows (status, progress, cost, messages…), set by a
    # database trigger: PostgreSQL stores the writing transaction's id, so the live page's `?since=`
    # cursor (jobs/changes.py) cannot miss a transaction that commits after a later one.
    change_mark = models.BigIntegerField(default=0, db_default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When the job's generation last moved: placed on a GPU, or its progress advanced. The GPU progress
    # watchdog reads it; a heartbeat alone (the worker is alive) does not move it.
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch_id", "position", "id"]
        indexes = [
            models.Index(fields=["provider", "status"], name="job_provider_status"),
            models.Index(fields=["batch", "status"], name="job_batch_status"),
            models.Index(fields=["status", "heartbeat_at"], name="job_status_heartbeat"),
            models.Index(fields=["batch", "change_mark"], name="job_batch_change_mark"),
            models.Index(fields=["batch", "position", "id"], name="job_batch_position"),
            # The image fetcher reads the oldest items waiting for their image, many times a second while a
            # big batch by URL is fetched: a small index of just those, in its order.
            models.Index(fields=["batch", "position", "id"], condition=models.Q(status="fetching"),
                         name="job_fetching_order"),
            # The latest clips of a provider, newest first: the ETA's and the estimates' measured speeds
            # (fal's turnaround, the GPU's seconds per clip) read the last 25 on every batch page, API read
            # and poll; without it each read sorts every clip genhub ever made.
            models.Index(fields=["provider", "-finished_at"], condition=models.Q(status="succeeded"),
                         name="job_recent_clips"),
        ]

    def __str__(self):
        # What a person recognises a clip by; the UUID is on the job's page.
        return f"{self.batch} · {self.input_name} · seed {self.seed}"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class BatchAppend(models.Model):
    """One `POST /api/batches/{id}/items/` that carried an `Idempotency-Key`: a retry with the same key
    answers with what the first request appended instead of appending the items again."""

    batch = models.ForeignKey(BatchRun, on_delete=models.CASCADE, related_name="appends")
    key = models.CharField(max_length=200)
    # What the request asked for (its fields and files, hashed): the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    first_position = models.PositiveIntegerField()
    count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["batch", "key"], name="batch_append_one_per_key")]

    def __str__(self):
        return f"{self.batch} · {self.key}"


class Alert(models.Model):
    """Something an operator or owner should know: the GPU down too long, a budget nearly spent, a stalled batch.

    `key` identifies the condition (e.g. "instance_down", "batch:12:stalled"); at most one alert per key is
    open at a time, so a condition that persists is reported once.
    """

    class Kind(models.TextChoices):
        INSTANCE_DOWN = "instance_down"
        BUDGET_WARNING = "budget_warning"  # 80 % of a cap
        BUDGET_REACHED = "budget_reached"  # 100 %: new work is paused
        BATCH_STALLED = "batch_stalled"
        STORAGE_FAILING = "storage_failing"  # paid results cannot be stored: new work is held
        VAST_SEARCH_QUOTA = "vast_search_quota"  # no GPU can be rented until vast's daily quota resets

    kind = models.CharField(max_length=32, choices=Kind.choices)
    key = models.CharField(max_length=100)
    message = models.TextField()
    batch = models.ForeignKey(BatchRun, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(resolved_at__isnull=True),
                                    name="alert_one_open_per_key"),
        ]

    def __str__(self):
        return f"{self.kind}: {self.message}"


class WebhookDelivery(models.Model):
    """One signed POST a batch owes its webhook, kept until it is delivered or out of attempts.

    The body is fixed when the event happens, so every re-delivery sends the same JSON (only the
    timestamp and its signature are fresh); the receiver de-duplicates by `X-Genhub-Delivery`.
    """

    class Event(models.TextChoices):
        BATCH_FINISHED = "batch.finished"
        JOB_FINISHED = "job.finished"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    batch = models.ForeignKey(BatchRun, on_delete=models.CASCADE, related_name="webhook_deliveries")
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=32, choices=Event.choices)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["delivered_at", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self):
        return f"{self.event} for batch {self.batch_id} ({'delivered' if self.delivered_at else 'pending'})"


class BatchCounts(models.Model):
    """Each batch's jobs counted by status, with their cost sums: what the batch list and the batch page
    read instead of adding up every job.

    Kept by database triggers on the jobs table (migration `batch_counts`, SQL in `jobs/counts_sql.py`),
    in the same transaction as the change: every way a job's status or cost changes — the services'
    compare-and-sets, the pumps' set-based updates, the admin, a bulk insert — passes through them, so
    the counts are exact whenever a transaction that reads them can see the jobs. Never written by Django.
    """

    batch = models.OneToOneField(BatchRun, primary_key=True, on_delete=models.CASCADE, related_name="tally")
    n_total = models.IntegerField(db_default=0)
    n_queued = models.IntegerField(db_default=0)
    n_waiting_for_gpu = models.IntegerField(db_default=0)
    n_running = models.IntegerField(db_default=0)
    n_succeeded = models.IntegerField(db_default=0)
    n_failed = models.IntegerField(db_default=0)
    n_cancelled = models.IntegerField(db_default=0)
    n_paused = models.IntegerField(db_default=0)
    n_storing = models.IntegerField(db_default=0)
    n_fetching = models.IntegerField(db_default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=4, db_default=0)
    wasted_usd = models.DecimalField(max_digits=14, decimal_places=4, db_default=0)
    # What the ETA, the deadline planner and the batch page count (counts_sql.CONDITIONS): fal jobs queued
    # or running, GPU jobs waiting and running, jobs the deadline planner moved to fal.
    n_fal_in_flight = models.IntegerField(db_default=0)
    n_gpu_waiting = models.IntegerField(db_default=0)
    n_gpu_running = models.IntegerField(db_default=0)
    n_deadline_moved = models.IntegerField(db_default=0)

    class Meta:
        verbose_name = "batch counts"
        verbose_name_plural = "batch counts"
