"""Compare-and-set leases: at most one process runs a named loop, and no request for it is lost.

- A lease is held for a short term (GENHUB_LEASE_SECONDS) and renewed by a thread of the holder, so a
  holder whose process died (SIGKILL, OOM, a lost host) lets go within one term, not minutes.
- A caller that finds the lease held does not just go away: it records a wake-up on the row, in the
  same compare-and-set that saw the lease held. The holder releases only with a compare-and-set on
  "no wake-up pending"; when one is, it runs another pass first. So a request that arrives while
  another process is busy is always served by someone.
- A holder on this machine whose process is gone (genhub/processes.py) is taken over at once: a
  cluster started again after a SIGKILL resumes its loops in seconds, not after a lease term.
- Every write survives a connection that died under it (reconnect and retry): a release on a dead
  connection would otherwise leave the lease held until it expires.
"""

import logging
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from genhub.db import DatabaseError, reconnect, with_reconnect
from genhub.models import Lease
from genhub.processes import is_gone, this_process

log = logging.getLogger(__name__)
# How often a holder resting between passes looks for a wake-up: a request is served within about this.
WAKE_CHECK_SECONDS = 0.5


def lease_term() -> float:
    return float(settings.GENHUB_LEASE_SECONDS)


def lease_acquire(*, name: str, seconds: float | None = None, wait: float = 0.0) -> str | None:
    """A holder token if the lease was free (or lapsed); None if someone else holds it.

    None also means a wake-up was recorded for the holder, who runs another pass before it lets go.
    `wait` > 0: if the holder stops renewing within that time (it died), take the lease over once it
    lapses instead of leaving the wake-up with a dead holder. A live holder's renewal ends the wait.
    """
    seconds = lease_term() if seconds is None else seconds
    holder = uuid.uuid4().hex
    with_reconnect(lambda: _ensure_row(name), what=f"lease {name}")
    give_up = time.monotonic() + wait
    first_seen = None
    while True:
        if with_reconnect(lambda: _take(name, holder, seconds), what=f"lease {name}"):
            return holder
        if with_reconnect(lambda: _take_from_gone(name, holder, seconds), what=f"lease {name}"):
            return holder
        if not with_reconnect(lambda: _ask_for_wake_up(name), what=f"lease {name}"):
            continue  # released or lapsed between the two statements: try to take it
        if time.monotonic() >= give_up:
            return None
        expires = Lease.objects.filter(name=name).values_list("expires_at", flat=True).first()
        if first_seen is None:
            first_seen = expires
        elif expires and first_seen and expires > first_seen:
            return None  # the holder renewed: it is alive and will see the wake-up
        time.sleep(min(0.5, max(0.05, give_up - time.monotonic())))


def _take(name: str, holder: str, seconds: float) -> bool:
    free = Q(expires_at__isnull=True) | Q(expires_at__lt=timezone.now())
    return _held_by(holder, seconds, Lease.objects.filter(name=name).filter(free))


def _take_from_gone(name: str, holder: str, seconds: float) -> bool:
    """Takes the lease from a holder whose process is certainly gone (compare-and-set on that holder).

    A wake-up it left pending goes with it: the new holder makes a pass of its own anyway."""
    held = Lease.objects.filter(name=name).exclude(holder="").values_list("holder", "process").first()
    if not held or not is_gone(held[1]):
        return False
    taken = _held_by(holder, seconds, Lease.objects.filter(name=name, holder=held[0]))
    if taken:
        log.warning("lease %s: its holder's process (%s) is gone; taken over", name, held[1])
    return taken


def _held_by(holder: str, seconds: float, rows) -> bool:
    """`holder` takes the lease rows given (a compare-and-set: they name the state it was taken from)."""
    return bool(rows.update(holder=holder, expires_at=timezone.now() + timedelta(seconds=seconds),
                            wake_requested=False, process=this_process()))


def _ask_for_wake_up(name: str) -> bool:
    """Leaves a wake-up on a lease that is held; False when it is not held any more (take it instead)."""
    return bool(Lease.objects.filter(name=name, expires_at__gte=timezone.now()).exclude(holder="").update(
        wake_requested=True))


def _ensure_row(name: str) -> None:
    try:
        with transaction.atomic():
            Lease.objects.get_or_create(name=name)
    except IntegrityError:
        pass  # created concurrently by another process: fine, the row exists now


def lease_renew(*, name: str, holder: str, seconds: float | None = None) -> bool:
    until = timezone.now() + timedelta(seconds=lease_term() if seconds is None else seconds)
    return Lease.objects.filter(name=name, holder=holder).update(expires_at=until) == 1


def lease_release(*, name: str, holder: str, force: bool = False) -> bool:
    """Lets go unless a wake-up arrived: then returns False and keeps the lease (the wake-up is now
    taken; run another pass and call again). `force` lets go regardless and returns whether one was
    pending (the caller then hands the work over to a fresh task). True also when the lease was no
    longer ours (it lapsed and someone else took it: they run)."""

    def release():
        mine = Lease.objects.filter(name=name, holder=holder)
        if force:
            pending = mine.filter(wake_requested=True).exists()
            mine.update(holder="", expires_at=None, wake_requested=False, process="")
            return not pending
        if mine.filter(wake_requested=False).update(holder="", expires_at=None, process=""):
            return True
        return not mine.update(wake_requested=False)

    return with_reconnect(release, attempts=8, what=f"release of lease {name}")


class HeldLease:
    """A lease this process holds, renewed every third of its term by a thread of its own (with its
    own connection) for as long as the process lives, however long one step of the loop takes."""

    def __init__(self, name: str, holder: str, term: float):
        self.name, self.holder, self.term = name, holder, term
        self.lost = threading.Event()  # someone else took it over: stop as soon as possible
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, name: str, *, wait: float = 0.0) -> "HeldLease | None":
        term = lease_term()
        holder = lease_acquire(name=name, seconds=term, wait=wait)
        return cls(name, holder, term) if holder else None

    def _renew(self):
        try:
            while not self._stop.wait(self.term / 3):
                try:
                    if not lease_renew(name=self.name, holder=self.holder, seconds=self.term):
                        log.warning("lease %s was taken over while we held it", self.name)
                        self.lost.set()
                        return
                except DatabaseError as exc:  # try again next beat; the term leaves room for two misses
                    log.warning("could not renew lease %s: %s", self.name, exc)
                    reconnect()
        finally:
            connection.close()  # this thread's own connection

    def nap(self, seconds: float) -> None:
        """Rests up to `seconds` between passes, ending early when a wake-up arrives (which it takes: the
        next pass serves it) or the lease is lost. A caller's request is thus served in about
        WAKE_CHECK_SECONDS, not after the rest of a long interval."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.lost.wait(min(WAKE_CHECK_SECONDS, left)):
                return
            try:
                if Lease.objects.filter(name=self.name, holder=self.holder, wake_requested=True).update(
                        wake_requested=False):
                    return
            except DatabaseError:  # the database is away: rest the whole interval, the pass reconnects
                reconnect()

    def release(self) -> bool:
        """False: a wake-up arrived; the lease is still held, run another pass."""
        if self.lost.is_set():
            self._stop_renewing()
            return True
        released = lease_release(name=self.name, holder=self.holder)
        if released:
            self._stop_renewing()
        return released

    def hand_over(self) -> bool:
        """Lets go whatever is pending; True when a wake-up was pending (enqueue a fresh run)."""
        self._stop_renewing()
        if self.lost.is_set():
            return False
        try:
            return not lease_release(name=self.name, holder=self.holder, force=True)
        except DatabaseError:
            log.exception("could not release lease %s; it lapses within %.0fs", self.name, self.term)
            return True

    def _stop_renewing(self):
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.term)
