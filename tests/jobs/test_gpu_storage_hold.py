"""The rented GPU during a storage hold: billed by the hour whether it works or not, it goes on generating
while its clips can wait in the pending area, and holds only when they could not be kept either. A real
full disk (tmpfs), real PostgreSQL, the simulated vast.ai and SwarmUI over real HTTP, the pump, reconcile
and worker tasks run in this process."""

import pytest

from gpu_instances.models import GpuInstance
from jobs import dispatch
from jobs.models import Alert, Job
from providers.registry import get_provider
from tests.gpu_instances.test_reconcile import ready_instance, reconcile_until
from tests.jobs.factories import make_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("without_qualification")]
S = Job.Status


@pytest.fixture(autouse=True)
def small_margins(settings):
    settings.GENHUB_RECONCILE_INTERVAL = 0.05
    settings.GENHUB_STORE_RETRY_SECONDS = 0
    settings.GENHUB_STORAGE_MIN_FREE_MB = 1  # a 4 MB disk is "full" below this, the pending area is not


def generations(sim):
    return [g for r in sim.instance_records() for g in sim.instances[r["id"]].swarmui.generations]


def test_the_gpu_goes_on_generating_into_the_pending_area_while_media_is_full(
        user, vast_sim, small_disk, media_root, drain):
    batch = make_batch(user, provider="vastai", count=3)
    small_disk.fill()

    drain(until=lambda: batch.jobs.filter(status=S.STORING).count() == 3)

    assert len(generations(vast_sim)) == 3  # every clip was made while nothing could be stored
    kept = list(batch.jobs.all())
    assert all(job.pending_result["spool"].startswith(str(media_root.parent / "media-pending")) for job in kept)
    assert all(job.cost_usd > 0 and job.wasted_usd == 0 for job in kept)
    assert Alert.objects.filter(kind=Alert.Kind.STORAGE_FAILING, resolved_at__isnull=True).exists()

    small_disk.free()
    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 3)

    assert len(generations(vast_sim)) == 3  # stored from the spool, none generated again
    assert [job.attempts for job in batch.jobs.all()] == [1, 1, 1]
    assert not list((media_root.parent / "media-pending").iterdir())


def test_the_gpu_holds_when_its_clips_could_not_wait_in_the_pending_area_either(
        user, vast_sim, small_disk, media_root, drain, settings):
    settings.GENHUB_PENDING_RESULTS_DIR = str(media_root / "pending")  # on the same full disk
    batch = make_batch(user, provider="vastai", count=3)
    reconcile_until(ready_instance)
    small_disk.fill()

    provider = get_provider("vastai")
    for _ in range(3):
        dispatch._pump_pass(provider)

    assert GpuInstance.objects.get().state == GpuInstance.State.READY  # a GPU was there to take work
    assert sorted(batch.jobs.values_list("status", flat=True)) == [S.QUEUED] * 3
    assert generations(vast_sim) == []

    small_disk.free()
    drain(until=lambda: batch.jobs.filter(status=S.SUCCEEDED).count() == 3)
    assert len(generations(vast_sim)) == 3
