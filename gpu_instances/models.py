from django.db import models
from django.db.models import Q
from django.utils import timezone


class GpuInstance(models.Model):
    """One rented vast.ai instance. Rows are never deleted: they are the history of what we paid for."""

    class State(models.TextChoices):
        PROVISIONING = "provisioning"  # row claimed; create request being sent
        LOADING = "loading"  # vast accepted it; image pulling / SwarmUI booting
        READY = "ready"
        UNHEALTHY = "unhealthy"  # health probes failing, not yet given up on
        DESTROYING = "destroying"
        DESTROYED = "destroyed"
        FAILED = "failed"  # gave up before it was ever destroyed cleanly (kept for history)

    ACTIVE_STATES = (State.PROVISIONING, State.LOADING, State.READY, State.UNHEALTHY)

    class Qualification(models.TextChoices):
        PENDING = "", "not yet"
        PASSED = "passed"
        FAILED = "failed"  # far slower than its GPU model: replaced, its samples kept out of the model's figures
        SKIPPED = "skipped"  # qualification was off (VAST_QUALIFY=0) when it became ready

    vast_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    label = models.CharField(max_length=100)
    offer_id = models.BigIntegerField(null=True, blank=True)
    machine_id = models.BigIntegerField(null=True, blank=True)
    gpu_name = models.CharField(max_length=100, blank=True)
    num_gpus = models.PositiveSmallIntegerField(default=1)
    dph_usd = models.DecimalField("$/hour", max_digits=8, decimal_places=4, null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PROVISIONING, db_index=True)
    base_url = models.URLField(blank=True)
    # Per-instance SwarmUI Authorization token: a secret, never shown in the admin or the API.
    swarmui_token = models.CharField(max_length=128, blank=True)
    # The self-signed certificate genhub made for this instance (PEM) and pins on every call to it. Public
    # by nature; its private key went to the instance in the create request and is never stored here.
    tls_certificate = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_health_at = models.DateTimeField(null=True, blank=True)
    last_health_ok = models.BooleanField(null=True)
    health_failures = models.PositiveIntegerField(default=0)
    first_health_failure_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    # The progress watchdog's escalation ladder: stalls since the last healthy generation (1 → interrupt,
    # 2 → restart the backend, 3 → replace), when the last one was acted on, and a backend restart under way.
    stall_count = models.PositiveSmallIntegerField(default=0)
    last_stall_at = models.DateTimeField(null=True, blank=True)
    backend_restart_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.TextField(blank=True)
    # Who asked for it: waiting jobs ("demand"), or an operator (`ensure_instance`), whose request stands
    # even while no job needs the GPU.
    requested_by = models.CharField(max_length=16, default="demand")
    # Qualification (gpu_instances/qualification.py): a ready instance takes user jobs only once its
    # self-test passed (`qualified_at` set), unless qualification is off.
    qualification = models.CharField(max_length=16, choices=Qualification.choices, blank=True)
    qualified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "GPU instance"
        constraints = [
            # At most one active instance: a second buy fails at the database, even when two workers race.
            models.UniqueConstraint(
                fields=["label"], condition=Q(state__in=["provisioning", "loading", "ready", "unhealthy"]),
                name="gpu_instance_one_active_per_label",
            )
        ]

    def __str__(self):
        if self.vast_id is None:
            # Not rented yet (or the create call failed): there is no vast id or GPU to name.
            return f"instance {self.pk} (not rented yet, {self.state})"
        return f"vast #{self.vast_id} ({self.gpu_name or 'GPU not reported yet'}, {self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES


class InstanceEvent(models.Model):
    """One transition or health flip of an instance, with the reason, for the history view."""

    instance = models.ForeignKey(GpuInstance, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=32)  # state, health, provision, destroy, leak, ...
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind}: {self.message}"


class OfferSearch(models.Model):
    """vast's offer search as every reconciling process sees it (one row): the last offer list, reused for
    VAST_OFFER_CACHE_SECONDS, and a daily-quota block that holds every search until the quota resets.

    In the database, not in memory: several processes reconcile, and each would otherwise spend the quota
    (and rediscover the block) on its own.
    """

    name = models.CharField(max_length=32, primary_key=True, default="vast")
    filters_key = models.CharField(max_length=64, blank=True)  # which query the cached offers answer
    offers = models.JSONField(default=list, blank=True)
    searched_at = models.DateTimeField(null=True, blank=True)
    blocked_until = models.DateTimeField(null=True, blank=True)
    blocked_reason = models.TextField(blank=True)
    blocked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"offer search ({len(self.offers)} cached, blocked until {self.blocked_until or '—'})"


class SpeedSample(models.Model):
    """GPU seconds one clip took on one machine: the history behind estimates, qualification and ranking.

    `machine_id` and `gpu_name` are copied from the instance so the history outlives nothing: it is what
    a machine did whichever instance (contract) ran on it.
    """

    class Source(models.TextChoices):
        SELFTEST = "selftest"
        JOB = "job"

    instance = models.ForeignKey(GpuInstance, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="speed_samples")
    machine_id = models.BigIntegerField(null=True, blank=True)
    gpu_name = models.CharField(max_length=100, blank=True)
    frames = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    seconds = models.FloatField(help_text="GPU seconds for one clip, from its first generation step")
    source = models.CharField(max_length=16, choices=Source.choices)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["gpu_name", "-at"], name="speed_sample_gpu_recent"),
            models.Index(fields=["machine_id", "-at"], name="speed_sample_machine_recent"),
        ]

    def __str__(self):
        return (f"{self.gpu_name or '?'} machine {self.machine_id}: {self.seconds:.1f} s for {self.frames} frames "
                f"{self.width}×{self.height} × {self.steps} steps ({self.source})")
