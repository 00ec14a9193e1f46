"""Compare-and-set leases: acquire, renew and release a named lock without holding a transaction."""

import uuid
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from genhub.models import Lease


def lease_acquire(*, name: str, seconds: float) -> str | None:
    """Returns a holder token if the lease was free (or expired), None if someone else holds it."""
    holder = uuid.uuid4().hex
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    try:
        with transaction.atomic():
            Lease.objects.get_or_create(name=name)
    except IntegrityError:
        pass  # created concurrently by another process: fine, the row exists now
    got = (
        Lease.objects.filter(name=name)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__lt=now))
        .update(holder=holder, expires_at=until)
    )
    # 0 rows: another process holds an unexpired lease.
    return holder if got else None


def lease_renew(*, name: str, holder: str, seconds: float) -> bool:
    until = timezone.now() + timedelta(seconds=seconds)
    return Lease.objects.filter(name=name, holder=holder).update(expires_at=until) == 1


def lease_release(*, name: str, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).update(holder="", expires_at=None)
