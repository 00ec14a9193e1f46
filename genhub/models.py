from django.db import models


class Lease(models.Model):
    """A named, expiring lock held in the database, so at most one process runs a loop at a time.

    django-q2 re-delivers and overlaps scheduled runs; the tasks themselves must exclude each other.
    The holder renews it every few seconds; `wake_requested` is set by a caller that found it held,
    and the holder runs another pass before it lets go (genhub/leases.py).
    """

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    wake_requested = models.BooleanField(default=False)
    # The holder's process (genhub/processes.py): a holder on this machine that died is taken over at
    # once, without waiting for the term to lapse.
    process = models.CharField(max_length=128, blank=True)

    def __str__(self):
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at}"
