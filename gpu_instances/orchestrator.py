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
from decimal import Decimal
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from genhub.db import DatabaseError, reconnect, with_reconnect
from genhub.leases import HeldLease
from gpu_instances import ranking
from gpu_instances.models import GpuInstance, InstanceEvent
from gpu_instances.offers import SearchBlocked, offers_find, offers_forget, offers_invalidate
from providers import instance_tls
from providers.errors import ProviderError, TransientError
from providers.swarmui import Readiness, SwarmUIClient, swarmui_http
from providers.swarmui_contract import LIGHTX2V_LORA, LIGHTX2V_LORA_LOW
from providers.vastai import (
    DEFAULT_MIN_INTERVALS,
    CreateOutcomeUnknown,
    OfferFilters,
    VastAIClient,
    build_create_request,
)

log = logging.getLogger(__name__)

State = GpuInstance.State
LEASE = "gpu_instances.reconcile"
# vast's minimum interval for `show` is 2.2 s (DEFAULT_MIN_INTERVALS): a boot is followed about that often.
BOOT_POLL_SECONDS = 2.5
# How far vast's clock (an instance's `start_date`) may be behind ours when matching an unanswered create.
CLOCK_SKEW_SECONDS = 60


def _hook(name: str):
    """Callables the layer above provides (demand, requeue), resolved by dotted path so imports point down."""
    return import_string(settings.GENHUB_GPU_HOOKS[name])


def swarmui_for(instance: GpuInstance, *, health: bool = False) -> SwarmUIClient:
    """One client per instance (and purpose) per process, so its SwarmUI session is reused rather than a
    new one opened for every probe and job (SwarmUI sessions are meant to be reused).

    An instance without a pinned certificate (rented before genhub pinned its channel) is never called:
    the error is transient, so its jobs go back to the queue and its failed probes replace it.
    """
    if not instance.tls_certificate or not instance.base_url.startswith("https://"):
        raise TransientError(f"instance vast #{instance.vast_id} has no pinned TLS channel; it will be replaced",
                             code="no_pinned_channel")
    return _swarmui_client(instance.base_url, instance.swarmui_token, instance.tls_certificate,
                           settings.VAST_HEALTH_TIMEOUT_SECONDS if health else None)


@lru_cache(maxsize=16)
def _swarmui_client(base_url: str, token: str, certificate: str, probe_timeout: float | None) -> SwarmUIClient:
    # Keyed by the certificate too: a client never outlives the pin it was built with.
    if probe_timeout is None:
        return SwarmUIClient(base_url, token, certificate=certificate)
    # A probe must answer fast and exactly once: retries would hide a dying server from the hysteresis.
    http = swarmui_http(token, certificate, read_timeout=probe_timeout, max_tries=1)
    return SwarmUIClient(base_url, token, certificate=certificate, http=http, status_timeout=probe_timeout)


def readiness(instance: GpuInstance):
    """SwarmUI answers, its backend runs, and the models genhub will ask for are listed."""
    models = tuple(name for name in (settings.SWARMUI_VIDEO_MODEL, settings.SWARMUI_SWAP_MODEL) if name)
    loras = (LIGHTX2V_LORA, LIGHTX2V_LORA_LOW) if settings.SWARMUI_SWAP_MODEL else (LIGHTX2V_LORA,)
    try:
        client = swarmui_for(instance, health=True)
    except ProviderError as exc:
        return Readiness(False, exc.message)
    return client.is_ready(required_models=models, required_loras=loras)


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

    def reconcile(self, *, max_seconds: float | None = None, say=None, wait: float = 0.0) -> str:
        """Runs short steps under the lease while there is something to follow, at most `max_seconds`.

        A reconcile asked for while another holds the lease is not lost: it leaves a wake-up that the
        holder serves with another step before it lets go. One still following something (a boot, a
        replacement) when its time is up hands over to a fresh task, so recovery never waits for the
        minute schedule. `wait`: take over a lease whose holder died (see `lease_acquire`).
        """
        if not settings.VAST_API_KEY:
            return "vast.ai is not configured (VAST_API_KEY is unset)"
        say = say or (lambda message: None)
        max_seconds = settings.GENHUB_RECONCILE_SECONDS if max_seconds is None else max_seconds
        lease = HeldLease.acquire(LEASE, wait=wait)
        if lease is None:
            return "skipped: another reconcile holds the lease (it will run another step)"
        deadline = time.monotonic() + max_seconds
        steps = []
        released = keep_going = clean = False
        try:
            while not lease.lost.is_set():
                outcome, keep_going = self._guarded_step()
                steps.append(outcome)
                say(outcome)
                if time.monotonic() >= deadline:
                    break
                if not keep_going:
                    if lease.release():
                        released = True
                        break
                    continue  # asked for again while this step ran: another step
                lease.nap(self._pause_after_step())
            clean = True
        finally:
            # Not after a bug: a fresh task would only hit it again at once (the minute schedule retries).
            pending = False if released else lease.hand_over()
            if not released and clean and (pending or keep_going):
                from gpu_instances.tasks import reconcile as reconcile_task

                with_reconnect(reconcile_task.enqueue, what="reconcile hand-over")
        return steps[-1] if steps else "nothing to do"

    def _pause_after_step(self) -> float:
        """Seconds until the next step. With no active instance (one was just given up) the replacement is
        bought at once, and a boot is followed at about vast's own limit for `show`, so a replacement starts
        work seconds after it is ready; everything else (health checks, the watchdog) every
        GENHUB_RECONCILE_INTERVAL."""
        interval = settings.GENHUB_RECONCILE_INTERVAL
        try:
            active = self.active()
        except DatabaseError:  # the database is away: the next step reconnects
            return interval
        if active is None:
            return 0.0
        if active.state == State.LOADING:
            return min(interval, BOOT_POLL_SECONDS)
        return interval

    def _guarded_step(self) -> tuple[str, bool]:
        """A database error (a connection cut under the loop) or an unanswered vast call costs one step,
        not the loop."""
        try:
            return self.step()
        except DatabaseError as exc:
            log.exception("reconcile step failed on the database; reconnecting")
            reconnect()
            return f"database error: {type(exc).__name__}", True
        except ProviderError as exc:  # vast unreachable for this step: the next one tries again
            log.warning("reconcile step failed: %s", exc.message)
            return f"vast.ai call failed: {exc.message}", True

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
        if instance.swarmui_token and instance.vast_id is None:
            # Claimed by a purchase that never recorded its instance: a create whose answer was lost, or a
            # buyer that died mid-create. Look for what it may have rented before ever buying again.
            return self._resolve_purchase(instance)
        avoid = self._machines_to_avoid()
        try:
            offers = offers_find(self.vast, OfferFilters.from_settings(exclude_machine_ids=avoid))
        except SearchBlocked as exc:
            return self._note_error(instance, exc.message)
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
        # A key and certificate of its own: the certificate is kept and pinned, the key only travels in the
        # create request (providers/instance_tls.py).
        tls = instance_tls.generate()
        claimed = GpuInstance.objects.filter(pk=instance.pk, state=State.PROVISIONING, vast_id__isnull=True,
                                             swarmui_token="").update(swarmui_token=token,
                                                                      tls_certificate=tls.certificate_pem,
                                                                      state_changed_at=timezone.now())
        if not claimed:
            return "another reconciler is renting this instance"
        body = build_create_request(image=settings.SWARMUI_IMAGE, label=self.label, disk_gb=settings.VAST_DISK_GB,
                                    swarmui_token=token, tls=tls)
        gone = []
        try:
            offer, vast_id = self.vast.create_on_first_available(offers, body, gone=lambda o: gone.append(o.id))
        except CreateOutcomeUnknown as exc:
            # The claim (and its token, which vast echoes in the instance's env) stays: the next steps look
            # for the instance this create may have made, and the leak sweep leaves it alone meanwhile.
            offers_forget(gone + [exc.offer_id])
            GpuInstance.objects.filter(pk=instance.pk, swarmui_token=token).update(offer_id=exc.offer_id)
            record(instance, "create", f"{exc.message}; looking for the instance it may have made before "
                                       f"renting again")
            return "create not answered: looking for its instance"
        except ProviderError as exc:
            # Nothing was rented: release the claim.
            offers_forget(gone)
            if exc.code == "no_offer_available":
                offers_invalidate()
            GpuInstance.objects.filter(pk=instance.pk, swarmui_token=token).update(
                swarmui_token="", tls_certificate="")
            return self._note_error(instance, f"could not rent any of {len(offers)} offer(s): {exc.message}")
        offers_forget(gone + [offer.id])
        transition(instance, State.LOADING, f"rented {offer.gpu_name} at ${offer.dph_total:.3f}/h on machine "
                                            f"{offer.machine_id} (vast #{vast_id}): "
                                            + ranking.rental_reason(ranked, offer, params=params, excluded=excluded),
                   vast_id=vast_id, offer_id=offer.id, machine_id=offer.machine_id, gpu_name=offer.gpu_name or "",
                   num_gpus=offer.num_gpus or 1, dph_usd=round(offer.dph_total, 4))
        return f"rented vast #{vast_id}"

    def _resolve_purchase(self, instance: GpuInstance) -> str:
        """Adopts the instance an unanswered create made (recognised by the per-instance token vast echoes
        in its env), or, once none has appeared for VAST_CREATE_RESOLVE_SECONDS, frees the claim to rent
        again. Never both: the instance found is this row's, not a leak and not a reason to buy."""
        try:
            remote = self.vast.list_instances(label=self.label)
        except ProviderError as exc:
            return f"could not look for the instance of an unanswered create: {exc.message}"
        owned = set(GpuInstance.objects.exclude(pk=instance.pk).filter(vast_id__isnull=False)
                    .values_list("vast_id", flat=True))
        unowned = [r for r in remote if r.id not in owned]
        found = [r for r in unowned if r.swarmui_token == instance.swarmui_token]
        if not found:
            # Should vast stop echoing the env: our label, created since this create was sent, and only when
            # exactly one such instance exists (two could not be told apart; the leak sweep takes them).
            sent = instance.state_changed_at.timestamp() - CLOCK_SKEW_SECONDS
            window = [r for r in unowned if r.swarmui_token is None and r.start_date and r.start_date >= sent]
            found = window if len(window) == 1 else []
        if found:
            made = found[0]
            dph = round(made.dph_total, 4) if made.dph_total is not None else None
            if transition(instance, State.LOADING, f"adopted vast #{made.id}: its create had not answered, and "
                                                   f"vast lists it with this instance's token",
                          vast_id=made.id, machine_id=made.machine_id, gpu_name=made.gpu_name or "", dph_usd=dph):
                record(instance, "adopt", f"adopted vast #{made.id} (machine {made.machine_id}) made by a create "
                                          f"whose answer was lost; not bought again")
            return f"adopted vast #{made.id}"
        waited = (timezone.now() - instance.state_changed_at).total_seconds()
        if waited < settings.VAST_CREATE_RESOLVE_SECONDS:
            return f"looking for the instance of an unanswered create ({waited:.0f}s)"
        if GpuInstance.objects.filter(pk=instance.pk, vast_id__isnull=True, swarmui_token=instance.swarmui_token
                                      ).update(swarmui_token="", tls_certificate="", offer_id=None,
                                               state_changed_at=timezone.now()):
            record(instance, "create", f"no instance appeared within {waited:.0f}s of the unanswered create; "
                                       f"renting again")
        return "the unanswered create made nothing: renting again"

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
        self._note_billed_price(instance, remote.dph_total)
        if remote.actual_status == "offline":
            # Before it ever served, a host that lost contact with vast is not worth waiting for.
            return self._fail(instance, f"{remote.doubt_reason} while booting")
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

    @staticmethod
    def _note_billed_price(instance: GpuInstance, billed) -> None:
        """vast bills what the ask cost when it was rented, which an older offer list (kept while searches
        are paused) may not show: the instance's own figure is the one its clips are costed at."""
        if not isinstance(billed, (int, float)) or not 0 < billed < 1000 or instance.dph_usd is None:
            return
        price = Decimal(str(round(billed, 4)))
        if price != instance.dph_usd:
            GpuInstance.objects.filter(pk=instance.pk).update(dph_usd=price)
            record(instance, "price", f"vast bills ${price}/h (the offer listed ${instance.dph_usd}/h)")
            instance.dph_usd = price

    def _check_health(self, instance: GpuInstance) -> str:
        remote = self._show(instance)
        if remote is None:
            return self._fail(instance, "vast no longer knows this instance (it vanished)")
        if remote.dead_reason:
            return self._fail(instance, remote.dead_reason)
        if instance.backend_restart_at:
            return self._follow_restart(instance)
        probe = readiness(instance)
        if not probe.ready:
            reason = f"{probe.reason}; {remote.doubt_reason}" if remote.doubt_reason else probe.reason
            return self._probe_failed(instance, reason, keep_working=False)
        stall = self._watch_progress(instance)
        instance.refresh_from_db()
        if not instance.is_active:
            return stall
        if stall:
            return self._probe_failed(instance, stall, keep_working=True)
        if remote.doubt_reason:
            # SwarmUI answers: the instance keeps working; only sustained trouble replaces it.
            if instance.state == State.UNHEALTHY:
                transition(instance, State.READY, f"SwarmUI answers again ({remote.doubt_reason})")
            return self._probe_failed(instance, f"{remote.doubt_reason}, although SwarmUI still answers",
                                      keep_working=True)
        GpuInstance.objects.filter(pk=instance.pk).update(
            last_health_at=timezone.now(), last_health_ok=True, health_failures=0, first_health_failure_at=None)
        if instance.state == State.UNHEALTHY:
            transition(instance, State.READY, "healthy again")
        return "healthy"

    def _probe_failed(self, instance: GpuInstance, reason: str, *, keep_working: bool) -> str:
        """Counts one failed probe. `keep_working`: SwarmUI itself answers, so work goes on meanwhile."""
        now = timezone.now()
        failures = instance.health_failures + 1
        first = instance.first_health_failure_at or now
        GpuInstance.objects.filter(pk=instance.pk).update(
            last_health_at=now, last_health_ok=False, health_failures=failures, first_health_failure_at=first)
        if instance.state == State.READY and not keep_working:
            transition(instance, State.UNHEALTHY, f"health probe failed: {reason}")
        else:
            record(instance, "health", f"health probe failed ({failures}): {reason}")
        # Hysteresis: several failures spread over a minimum time, so one dropped probe never kills
        # a healthy (and paid-for, model-loaded) instance.
        failing_for = (now - first).total_seconds()
        if failures >= settings.VAST_HEALTH_FAILURES and failing_for >= settings.VAST_HEALTH_MIN_SECONDS:
            instance.refresh_from_db()
            return self._fail(instance, f"unhealthy: {failures} failed probes over {failing_for:.0f}s ({reason})")
        return f"unhealthy ({failures} failure(s) over {failing_for:.0f}s): {reason}"

    # --- the progress watchdog ---------------------------------------------------------------

    def _watch_progress(self, instance: GpuInstance) -> str | None:
        """A stall (work on the instance, no progress for longer than the limit) takes the next step of the
        ladder: interrupt, then restart the backend, then replace the instance. Returns the stall, or None.

        The clock runs from the later of the last progress and the last step taken, so one stall is acted
        on once; a healthy generation since the last step puts the ladder back at the bottom.
        """
        progress = _hook("instance_progress")(instance_id=instance.pk)
        now = timezone.now()
        if instance.stall_count and progress.last_success_at and instance.last_stall_at \
                and progress.last_success_at > instance.last_stall_at:
            GpuInstance.objects.filter(pk=instance.pk).update(stall_count=0)
            record(instance, "stall", f"a healthy generation after {instance.stall_count} stall(s): the "
                                      f"watchdog starts again from its first step")
            instance.refresh_from_db()
        if not progress.running or progress.last_moved_at is None:
            return None
        since = max(filter(None, (progress.last_moved_at, instance.last_stall_at)))
        quiet = (now - since).total_seconds()
        limit = progress.stall_limit_seconds
        if instance.stall_count:
            # After an interrupt or a restart the backend may load its models again before the first step:
            # give that cold start a floor's more time, so a slow reload never escalates to the next step.
            limit += settings.SWARMUI_STALL_FLOOR_SECONDS
        if quiet <= limit:
            return None
        count = instance.stall_count + 1
        if not GpuInstance.objects.filter(pk=instance.pk, stall_count=instance.stall_count).update(
                stall_count=count, last_stall_at=now):
            return None  # another reconciler took this step
        instance.refresh_from_db()
        cause = (f"no generation progress for {quiet:.0f}s (stall limit {limit:.0f}s) "
                 f"with {progress.running} job(s) on it, although SwarmUI's status routes answer")
        if count == 1:
            return self._stall_interrupt(instance, cause)
        if count == 2:
            return self._stall_restart(instance, cause)
        return self._fail(instance, f"stalled {count} times without a healthy generation between: {cause}")

    def _requeue_stalled(self, instance: GpuInstance, reason: str) -> int:
        # Released before SwarmUI is told, so the interrupted workers' failure reports find nothing to count.
        return _hook("instance_stalled")(instance_id=instance.pk, reason=reason)

    def _stall_interrupt(self, instance: GpuInstance, cause: str) -> str:
        if instance.state == State.READY:  # out of rotation while its jobs are taken off
            transition(instance, State.UNHEALTHY, f"stalled: {cause}")
        requeued = self._requeue_stalled(instance, f"the GPU stalled and was interrupted: {cause}")
        try:
            swarmui_for(instance, health=True).interrupt_all()
            done = "interrupted every generation in SwarmUI (InterruptAll)"
        except ProviderError as exc:
            done = f"InterruptAll failed ({exc.message}); the workers interrupt their own generations"
        record(instance, "stall", f"stall 1: {cause}. Step 1: {done}; {requeued} job(s) back to the queue "
                                  f"without using an attempt")
        return f"stall 1: interrupted ({cause})"

    def _stall_restart(self, instance: GpuInstance, cause: str) -> str:
        if instance.state == State.READY:
            transition(instance, State.UNHEALTHY, f"stalled again: {cause}")
        requeued = self._requeue_stalled(instance, f"the GPU stalled again; its backend restarts: {cause}")
        GpuInstance.objects.filter(pk=instance.pk).update(backend_restart_at=timezone.now())
        try:
            count = swarmui_for(instance, health=True).restart_backends()
            done = f"restarted {count} SwarmUI backend(s) (RestartBackends); waiting for `running`"
        except ProviderError as exc:
            done = f"RestartBackends failed ({exc.message}); waiting for the backend until the restart deadline"
        record(instance, "stall", f"stall 2: {cause}. Step 2: {done}; {requeued} job(s) back to the queue "
                                  f"without using an attempt")
        return f"stall 2: restarting the backend ({cause})"

    def _follow_restart(self, instance: GpuInstance) -> str:
        waited = (timezone.now() - instance.backend_restart_at).total_seconds()
        probe = readiness(instance)
        if probe.ready:
            now = timezone.now()
            GpuInstance.objects.filter(pk=instance.pk).update(
                backend_restart_at=None, last_health_at=now, last_health_ok=True, health_failures=0,
                first_health_failure_at=None)
            instance.refresh_from_db()
            transition(instance, State.READY, f"backend running again {waited:.0f}s after RestartBackends")
            return "backend restarted"
        if waited > settings.SWARMUI_RESTART_DEADLINE_SECONDS:
            return self._fail(instance, f"backend not running {waited:.0f}s after RestartBackends "
                                        f"(deadline {settings.SWARMUI_RESTART_DEADLINE_SECONDS:.0f}s): {probe.reason}")
        return f"waiting for the backend restart ({waited:.0f}s): {probe.reason}"

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
        if GpuInstance.objects.filter(label=self.label, state=State.PROVISIONING, vast_id__isnull=True).exclude(
                swarmui_token="").exists():
            # A purchase is under way or its create went unanswered: the instance it may have made is not
            # recorded yet and is no leak. `_resolve_purchase` adopts it or gives the claim up.
            return
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
