"""The persistent vast.ai instance: buy it, follow it to ready, watch it, replace it when it dies.

`VastAIOrchestrator.reconcile()` is the only place that buys or destroys instances. It runs under a
lease (one at a time, whoever calls it: the scheduled task, a pump asking for capacity, or
`manage.py ensure_instance`), and makes short steps: each step reads the world (the database row,
vast's view of the instance, SwarmUI's answer) and moves the instance at most one state:

    (demand, nothing active) → provisioning → loading → ready ⇄ unhealthy → destroying → destroyed
                                       └──────── boot deadline / vast says dead / sustained failure ┘

At most one instance is active: the database refuses a second active row, so two racing callers
cannot both buy. Instances carrying our label that the database does not own are destroyed.
"""

import logging
import secrets
import time
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from genhub.leases import lease_acquire, lease_release, lease_renew
from gpu_instances import ranking
from gpu_instances.models import GpuInstance, InstanceEvent
from providers.errors import ProviderError
from providers.http import HttpClient
from providers.swarmui import SwarmUIClient
from providers.swarmui_contract import LIGHTX2V_LORA, LIGHTX2V_LORA_LOW
from providers.vastai import DEFAULT_MIN_INTERVALS, OfferFilters, VastAIClient, build_create_request

log = logging.getLogger(__name__)

State = GpuInstance.State
LEASE = "gpu_instances.reconcile"
# A purchase claim older than this belongs to a reconciler that died (a create takes seconds).
STALE_PURCHASE_SECONDS = 600


def _hook(name: str):
    """Callables the layer above provides (demand, requeue), resolved by dotted path so imports point down."""
    return import_string(settings.GENHUB_GPU_HOOKS[name])


def swarmui_for(instance: GpuInstance, *, health: bool = False) -> SwarmUIClient:
    """One client per instance (and purpose) per process, so its SwarmUI session is reused rather than a
    new one opened for every probe and job (reference/swarmui-api.md §2.1)."""
    return _swarmui_client(instance.base_url, instance.swarmui_token,
                           settings.VAST_HEALTH_TIMEOUT_SECONDS if health else None)


@lru_cache(maxsize=16)
def _swarmui_client(base_url: str, token: str, probe_timeout: float | None) -> SwarmUIClient:
    if probe_timeout is None:
        return SwarmUIClient(base_url, token)
    # A probe must answer fast and exactly once: retries would hide a dying server from the hysteresis.
    http = HttpClient("SwarmUI", headers={"Authorization": token}, read_timeout=probe_timeout, max_tries=1)
    return SwarmUIClient(base_url, token, http=http, status_timeout=probe_timeout)


def readiness(instance: GpuInstance):
    """SwarmUI answers, its backend runs, and the models genhub will ask for are listed."""
    models = tuple(name for name in (settings.SWARMUI_VIDEO_MODEL, settings.SWARMUI_SWAP_MODEL) if name)
    loras = (LIGHTX2V_LORA, LIGHTX2V_LORA_LOW) if settings.SWARMUI_SWAP_MODEL else (LIGHTX2V_LORA,)
    return swarmui_for(instance, health=True).is_ready(required_models=models, required_loras=loras)


def record(instance: GpuInstance, kind: str, message: str, *, to_state: str = "") -> None:
    InstanceEvent.objects.create(instance=instance, kind=kind, from_state=instance.state if to_state else "",
                                 to_state=to_state, message=message[:2000])


def transition(instance: GpuInstance, to_state: str, message: str, **fields) -> bool:
    """Compare-and-set on the state the caller saw; records the event only when it happened."""
    now = timezone.now()
    updated = GpuInstance.objects.filter(pk=instance.pk, state=instance.state).update(
        state=to_state, state_changed_at=now, **fields)
    if updated:
        record(instance, "state", message, to_state=to_state)
        instance.refresh_from_db()
        log.info("instance %s → %s: %s", instance.vast_id, to_state, message)
    return bool(updated)


class VastAIOrchestrator:
    def __init__(self, vast: VastAIClient | None = None):
        self.vast = vast or VastAIClient(
            settings.VAST_API_URL, settings.VAST_API_KEY,
            min_intervals={name: seconds * settings.VAST_PACING_SCALE
                           for name, seconds in DEFAULT_MIN_INTERVALS.items()})
        self.label = settings.GENHUB_INSTANCE_LABEL

    # --- the single persistent instance --------------------------------------------------

    def demand(self) -> int:
        return _hook("demand")()

    def active(self) -> GpuInstance | None:
        return GpuInstance.objects.filter(label=self.label, state__in=GpuInstance.ACTIVE_STATES).first()

    def ready(self) -> GpuInstance | None:
        return GpuInstance.objects.filter(label=self.label, state=State.READY).first()

    def get_or_create_instance(self, *, requested_by: str = "demand") -> tuple[GpuInstance, bool]:
        """The active instance, or a new `provisioning` row for reconcile to buy. (instance, created)

        The partial unique index makes this safe against racing callers: the loser's insert fails
        and it gets the winner's row.
        """
        existing = self.active()
        if existing:
            return existing, False
        try:
            with transaction.atomic():
                instance = GpuInstance.objects.create(label=self.label, state=State.PROVISIONING,
                                                      state_changed_at=timezone.now(), requested_by=requested_by)
        except IntegrityError:
            return self.active(), False
        record(instance, "provision", f"an instance was requested ({requested_by})")
        return instance, True

    def report_trouble(self, instance: GpuInstance, reason: str) -> None:
        """A job could not talk to the instance. Stop sending it work until a probe says otherwise.

        Only `unhealthy`, never failed: the hysteresis of the health checks decides whether it dies.
        Without this the pump would keep dispatching to a dead machine that the database still calls
        ready, and every job would burn its attempts in seconds before reconcile notices.
        """
        if transition(instance, State.UNHEALTHY, f"a job could not reach SwarmUI: {reason}"):
            from gpu_instances.tasks import reconcile as reconcile_task

            reconcile_task.enqueue()

    # --- reconcile --------------------------------------------------------------------------

    def reconcile(self, *, max_seconds: float | None = None, say=None) -> str:
        """Runs short steps under the lease while there is something to follow, at most `max_seconds`."""
        if not settings.VAST_API_KEY:
            return "vast.ai is not configured (VAST_API_KEY is unset)"
        say = say or (lambda message: None)
        max_seconds = settings.GENHUB_RECONCILE_SECONDS if max_seconds is None else max_seconds
        lease_seconds = max_seconds + 300
        holder = lease_acquire(name=LEASE, seconds=lease_seconds)
        if not holder:
            return "skipped: another reconcile holds the lease"
        deadline = time.monotonic() + max_seconds
        steps = []
        try:
            while True:
                outcome, keep_going = self.step()
                steps.append(outcome)
                say(outcome)
                if not keep_going or time.monotonic() >= deadline:
                    break
                lease_renew(name=LEASE, holder=holder, seconds=lease_seconds)
                time.sleep(settings.GENHUB_RECONCILE_INTERVAL)
        finally:
            lease_release(name=LEASE, holder=holder)
        return steps[-1] if steps else "nothing to do"

    def step(self) -> tuple[str, bool]:
        """One pass over the world. Returns (what happened, whether another step soon is useful)."""
        from gpu_instances import qualification  # it builds on this module's record and fail path
        self._finish_destroying()
        self._sweep_leaks()
        instance = self.active()
        demand = self.demand()
        if instance is None:
            if not demand:
                return "idle: no instance and no demand", False
            instance, _ = self.get_or_create_instance()
        if instance.state == State.PROVISIONING:
            if not demand and not instance.swarmui_token and instance.requested_by == "demand":
                # Requested, but the work went away (cancelled, paused by a cap) before anything was rented.
                transition(instance, State.DESTROYED, "released: nothing needs a GPU any more; nothing was rented",
                           end_reason="released: no demand before it was rented", destroyed_at=timezone.now())
                return "released an unrented request", False
            return self._provision(instance), True
        if instance.state == State.LOADING:
            outcome = self._follow_boot(instance)
            # Qualified in the step that found it ready, so no job ever sees it unqualified ...
            return (qualification.qualify(self, instance) if qualification.needs_selftest(instance) else outcome), True
        if qualification.needs_selftest(instance):
            return qualification.qualify(self, instance), True  # ... or in the next, if that step was cut short
        outcome = self._check_health(instance)
        active = self.active()
        if active and active.state == State.READY and not demand:
            reason = _hook("release_reason")(instance_id=active.pk, ready_at=active.ready_at)
            if reason:
                self.destroy(active, reason)
                return reason, False
        return outcome, bool(demand) or active is None or active.state != State.READY

    def _provision(self, instance: GpuInstance) -> str:
        if not settings.SWARMUI_IMAGE:
            return self._note_error(instance, "SWARMUI_IMAGE is not set: cannot rent an instance")
        avoid = self._machines_to_avoid()
        try:
            offers = self.vast.search_offers(OfferFilters.from_settings(exclude_machine_ids=avoid))
        except ProviderError as exc:
            return self._note_error(instance, f"offer search failed: {exc.message}")
        if not offers:
            return self._note_error(instance, "no vast.ai offer matches the filters right now")
        params = ranking.planning_params()
        ranked, excluded = ranking.rank_offers(offers, params=params)
        if not ranked:
            return self._note_error(instance, f"every matching offer is on a machine with a slow record: "
                                              f"{'; '.join(excluded)}")
        offers = [row.offer for row in ranked]  # cheapest per clip first
        # Claim the purchase (compare-and-set on the empty token): behind the lease this always wins,
        # but it keeps a second buyer out even if something calls step() without the lease.
        token = secrets.token_urlsafe(32)
        claimed = GpuInstance.objects.filter(pk=instance.pk, state=State.PROVISIONING, vast_id__isnull=True,
                                             swarmui_token="").update(swarmui_token=token,
                                                                      state_changed_at=timezone.now())
        if not claimed:
            claimed_for = (timezone.now() - instance.state_changed_at).total_seconds()
            if claimed_for > STALE_PURCHASE_SECONDS:
                # The buyer died mid-purchase; whatever it may have rented carries our label and no
                # record, so the leak sweep destroys it. Free the claim for a fresh purchase.
                GpuInstance.objects.filter(pk=instance.pk, vast_id__isnull=True).update(
                    swarmui_token="", state_changed_at=timezone.now())
            return "another reconciler is renting this instance"
        body = build_create_request(image=settings.SWARMUI_IMAGE, label=self.label, disk_gb=settings.VAST_DISK_GB,
                                    swarmui_token=token)
        try:
            offer, vast_id = self.vast.create_on_first_available(offers, body)
        except ProviderError as exc:
            # Nothing was rented (a create with an unknown outcome is found by the leak sweep): release the claim.
            GpuInstance.objects.filter(pk=instance.pk, swarmui_token=token).update(swarmui_token="")
            return self._note_error(instance, f"could not rent any of {len(offers)} offer(s): {exc.message}")
        transition(instance, State.LOADING, f"rented {offer.gpu_name} at ${offer.dph_total:.3f}/h on machine "
                                            f"{offer.machine_id} (vast #{vast_id}): "
                                            + ranking.rental_reason(ranked, offer, params=params, excluded=excluded),
                   vast_id=vast_id, offer_id=offer.id, machine_id=offer.machine_id, gpu_name=offer.gpu_name or "",
                   num_gpus=offer.num_gpus or 1, dph_usd=round(offer.dph_total, 4))
        return f"rented vast #{vast_id}"

    def _note_error(self, instance: GpuInstance, message: str) -> str:
        """Records a problem once (not on every step) and keeps trying."""
        last = instance.events.order_by("-at", "-id").first()
        if not last or last.message != message:
            record(instance, "error", message)
        return message

    def _follow_boot(self, instance: GpuInstance) -> str:
        remote = self._show(instance)
        booted_for = (timezone.now() - instance.state_changed_at).total_seconds()
        if remote is None:
            # vast can answer `{"instances": null}` for a contract created seconds ago (reference §5).
            if booted_for < settings.VAST_NEW_INSTANCE_GRACE_SECONDS:
                return "booting: vast does not list the new instance yet"
            return self._fail(instance, "vast no longer knows this instance (it vanished while booting)")
        if remote.dead_reason:
            return self._fail(instance, remote.dead_reason)
        if booted_for > settings.VAST_BOOT_DEADLINE_SECONDS:
            return self._fail(instance, f"not ready after {booted_for:.0f}s (deadline "
                                        f"{settings.VAST_BOOT_DEADLINE_SECONDS}s); trying another machine")
        url = remote.swarmui_url
        if not url:
            return f"booting: vast status {remote.actual_status or 'pending'}"
        if url != instance.base_url:
            GpuInstance.objects.filter(pk=instance.pk).update(base_url=url)
            instance.base_url = url
        ready = readiness(instance)
        if not ready.ready:
            return f"booting: {ready.reason}"
        now = timezone.now()
        transition(instance, State.READY, f"SwarmUI ready at {url} after {booted_for:.0f}s", ready_at=now,
                   last_health_at=now, last_health_ok=True, health_failures=0, first_health_failure_at=None)
        return "ready"

    def _check_health(self, instance: GpuInstance) -> str:
        now = timezone.now()
        remote = self._show(instance)
        if remote is None:
            return self._fail(instance, "vast no longer knows this instance (it vanished)")
        if remote.dead_reason:
            return self._fail(instance, remote.dead_reason)
        probe = readiness(instance)
        if probe.ready:
            GpuInstance.objects.filter(pk=instance.pk).update(
                last_health_at=now, last_health_ok=True, health_failures=0, first_health_failure_at=None)
            if instance.state == State.UNHEALTHY:
                transition(instance, State.READY, "healthy again")
            return "healthy"
        failures = instance.health_failures + 1
        first = instance.first_health_failure_at or now
        GpuInstance.objects.filter(pk=instance.pk).update(
            last_health_at=now, last_health_ok=False, health_failures=failures, first_health_failure_at=first)
        if instance.state == State.READY:
            transition(instance, State.UNHEALTHY, f"health probe failed: {probe.reason}")
        else:
            record(instance, "health", f"health probe failed ({failures}): {probe.reason}")
        # Hysteresis: several failures spread over a minimum time, so one dropped probe never kills
        # a healthy (and paid-for, model-loaded) instance.
        failing_for = (now - first).total_seconds()
        if failures >= settings.VAST_HEALTH_FAILURES and failing_for >= settings.VAST_HEALTH_MIN_SECONDS:
            instance.refresh_from_db()
            return self._fail(instance, f"unhealthy: {failures} failed probes over {failing_for:.0f}s "
                                        f"({probe.reason})")
        return f"unhealthy ({failures} failure(s) over {failing_for:.0f}s): {probe.reason}"

    def _show(self, instance: GpuInstance):
        return self.vast.show_instance(instance.vast_id) if instance.vast_id else None

    # --- failure, destruction, leaks --------------------------------------------------------

    def replace(self, instance: GpuInstance, reason: str) -> str:
        """Gives up on an instance for a reason found outside this module (a failed self-test)."""
        return self._fail(instance, reason)

    def _fail(self, instance: GpuInstance, reason: str) -> str:
        """Gives up on an instance: its jobs go back to the queue and it is destroyed (verified)."""
        if not transition(instance, State.DESTROYING, reason, end_reason=reason):
            return "someone else already moved this instance"
        requeued = _hook("instance_lost")(instance_id=instance.pk, reason=reason)
        if requeued:
            record(instance, "jobs", f"{requeued} job(s) on it went back to the queue")
        self._destroy(instance)
        return f"replaced: {reason}"

    def destroy(self, instance: GpuInstance, reason: str) -> None:
        """Operator's destroy (`destroy_instance`, the admin action)."""
        if instance.state in GpuInstance.ACTIVE_STATES:
            self._fail(instance, reason)
        elif instance.state == State.DESTROYING:
            self._destroy(instance)

    def _destroy(self, instance: GpuInstance) -> None:
        if instance.vast_id:
            try:
                self.vast.destroy_and_verify(instance.vast_id)
            except ProviderError as exc:
                # Still paid for: stays `destroying`, and every later step tries again.
                record(instance, "destroy", f"destroy not confirmed yet: {exc.message}")
                return
        transition(instance, State.DESTROYED, "destroyed (verified)", destroyed_at=timezone.now())

    def _finish_destroying(self) -> None:
        for instance in GpuInstance.objects.filter(label=self.label, state=State.DESTROYING):
            self._destroy(instance)

    def _sweep_leaks(self) -> None:
        """Destroys any instance with our label that the database does not own (a crash between buying
        and recording, a second deployment, a manual rental with the same label)."""
        purchase_since = timezone.now() - timedelta(seconds=STALE_PURCHASE_SECONDS)
        if GpuInstance.objects.filter(label=self.label, state=State.PROVISIONING, vast_id__isnull=True,
                                      state_changed_at__gte=purchase_since).exclude(swarmui_token="").exists():
            return  # a purchase is under way: its new instance is not recorded yet and is no leak
        owned = set(GpuInstance.objects.filter(label=self.label, vast_id__isnull=False)
                    .exclude(state__in=(State.DESTROYED, State.FAILED)).values_list("vast_id", flat=True))
        try:
            remote = self.vast.list_instances(label=self.label)
        except ProviderError as exc:
            log.warning("leak sweep skipped: %s", exc.message)
            return
        for leaked in (r for r in remote if r.id not in owned):
            log.warning("destroying leaked instance vast #%s (label %s)", leaked.id, leaked.label)
            row = GpuInstance.objects.create(
                vast_id=leaked.id, label=self.label, machine_id=leaked.machine_id,
                gpu_name=leaked.gpu_name or "", state=State.DESTROYING, end_reason="leak: not owned by genhub",
                state_changed_at=timezone.now())
            record(row, "leak", f"vast #{leaked.id} carries our label but no record owns it; destroying")
            self._destroy(row)

    def _machines_to_avoid(self) -> list[int]:
        since = timezone.now() - timedelta(hours=settings.VAST_AVOID_MACHINE_HOURS)
        return list(GpuInstance.objects.filter(created_at__gte=since, machine_id__isnull=False)
                    .exclude(end_reason="").exclude(end_reason__startswith="operator")
                    .exclude(end_reason__startswith="released")
                    .exclude(end_reason__startswith="leak").values_list("machine_id", flat=True).distinct())
