"""Speed history and the expected seconds per clip built from it (gpu_instances/speed.py)."""

import pytest
from django.utils import timezone

from gpu_instances import speed
from gpu_instances.models import GpuInstance, SpeedSample
from jobs import services
from jobs.models import Job
from tests.jobs.factories import make_batch

pytestmark = pytest.mark.django_db
Q = GpuInstance.Qualification
SMALL = {"num_frames": 17, "width": 256, "height": 256, "steps": 4}
STANDARD = {"num_frames": 81, "width": 832, "height": 480, "steps": 4}


def an_instance(*, machine_id=7, gpu_name="H100 SXM", **fields) -> GpuInstance:
    return GpuInstance.objects.create(label=f"old-{GpuInstance.objects.count()}", machine_id=machine_id,
                                      gpu_name=gpu_name, state=GpuInstance.State.DESTROYED, **fields)


def samples(instance, seconds_list, params=SMALL, source="job"):
    for seconds in seconds_list:
        speed.record_sample(instance=instance, params=params, seconds=seconds, source=source)


def test_an_instance_is_estimated_from_its_own_samples_then_its_machines_then_its_models():
    earlier_on_machine = an_instance(machine_id=7)
    samples(earlier_on_machine, [20.0, 20.0, 20.0])
    other_machine = an_instance(machine_id=8)
    samples(other_machine, [10.0, 10.0, 10.0])
    current = an_instance(machine_id=7)

    assert speed.expected_seconds_per_clip(params=SMALL, instance=current).basis == "machine"
    assert speed.expected_seconds_per_clip(params=SMALL, instance=current).median == 20.0
    samples(current, [30.0])
    own = speed.expected_seconds_per_clip(params=SMALL, instance=current)
    assert (own.basis, own.median, own.samples) == ("instance", 30.0, 1)

    new_machine = speed.expected_seconds_per_clip(params=SMALL, machine_id=99, gpu_name="H100 SXM")
    assert (new_machine.basis, new_machine.median, new_machine.samples) == ("gpu", 20.0, 7)


def test_samples_of_other_parameters_are_scaled_by_frames_times_pixels_times_steps():
    instance = an_instance()
    samples(instance, [4.0], params=SMALL)

    estimate = speed.expected_seconds_per_clip(params={**SMALL, "num_frames": 81, "width": 512, "steps": 8},
                                               instance=instance)

    assert estimate.median == pytest.approx(4.0 * (81 / 17) * (512 / 256) * (8 / 4))


def test_same_parameter_samples_are_used_alone_once_there_are_enough():
    instance = an_instance()
    samples(instance, [3.0], params=SMALL)  # would scale to ≈ 87 s for the standard clip
    samples(instance, [60.0, 62.0], params=STANDARD)
    assert speed.expected_seconds_per_clip(params=STANDARD, instance=instance).samples == 3

    samples(instance, [61.0], params=STANDARD)
    estimate = speed.expected_seconds_per_clip(params=STANDARD, instance=instance)
    assert (estimate.median, estimate.samples) == (61.0, 3)


def test_a_model_without_history_uses_the_shipped_table_scaled_from_the_nearest_reference_clip():
    h100 = speed.expected_seconds_per_clip(params=STANDARD, gpu_name="H100 SXM")
    a100 = speed.expected_seconds_per_clip(params=STANDARD, gpu_name="A100 SXM4")
    selftest = speed.expected_seconds_per_clip(params=SMALL, gpu_name="H100 SXM")
    longer = speed.expected_seconds_per_clip(params={**STANDARD, "num_frames": 121}, gpu_name="H100 SXM")

    assert (h100.basis, h100.samples, h100.median) == ("table", 0, 60.0)
    assert a100.median == pytest.approx(60.0 * speed.RELATIVE_TO_H100_SXM["A100 SXM4"])
    # The small clip has its own reference figure: scaling 60 s down by work would say 2 s, and fixed costs
    # make a small clip slower than that.
    assert selftest.median == 6.0
    assert longer.median == pytest.approx(60.0 * 121 / 81)
    assert h100.low < h100.median < h100.high


def test_an_unknown_gpu_model_is_estimated_slower_than_any_known_one():
    unknown = speed.expected_seconds_per_clip(params=STANDARD, gpu_name="Mystery X1")
    slowest = max(speed.expected_seconds_per_clip(params=STANDARD, gpu_name=name).median
                  for name in speed.RELATIVE_TO_H100_SXM)

    assert unknown.basis == "unknown" and unknown.median > slowest
    assert "conservatively" in unknown.describe()


def test_the_spread_is_wider_with_fewer_samples_and_follows_the_measurements():
    few, many, noisy = an_instance(machine_id=1), an_instance(machine_id=2), an_instance(machine_id=3)
    samples(few, [10.0])
    samples(many, [10.0] * 25)
    samples(noisy, [5.0, 10.0, 15.0] * 8 + [10.0])

    one = speed.expected_seconds_per_clip(params=SMALL, instance=few)
    steady = speed.expected_seconds_per_clip(params=SMALL, instance=many)
    spread = speed.expected_seconds_per_clip(params=SMALL, instance=noisy)

    assert one.high - one.low > steady.high - steady.low
    assert (one.low, one.high) == pytest.approx((7.0, 13.0))  # ±30 % for a single sample
    assert spread.median == 10.0 and spread.high - spread.low > 2 * (steady.high - steady.low)


def test_a_host_that_failed_its_selftest_does_not_make_its_gpu_model_look_slow():
    samples(an_instance(machine_id=1), [5.0, 5.0, 5.0])
    samples(an_instance(machine_id=2, qualification=Q.FAILED), [50.0] * 10, source="selftest")

    model = speed.expected_seconds_per_clip(params=SMALL, gpu_name="H100 SXM")
    slow_machine = speed.expected_seconds_per_clip(params=SMALL, machine_id=2, gpu_name="H100 SXM")

    assert (model.median, model.samples) == (5.0, 3)
    assert slow_machine.median == 50.0  # its own record still says what it did


def test_a_vastai_job_that_succeeds_records_its_gpu_seconds_as_a_job_sample(user):
    instance = an_instance(machine_id=42, gpu_name="H200")
    job = make_batch(user, provider="vastai", params={"num_frames": 33}).jobs.get()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempts=1, started_at=timezone.now())

    assert services.job_succeed(job_id=job.pk, generation_seconds=12.5, instance_id=instance.pk)

    sample = SpeedSample.objects.get()
    assert (sample.instance, sample.machine_id, sample.gpu_name, sample.source) == (instance, 42, "H200", "job")
    assert (sample.frames, sample.steps, sample.seconds) == (33, 4, 12.5)
    assert (sample.width, sample.height) == (job.params["width"], job.params["height"])


def test_a_job_that_no_longer_runs_records_no_sample(user):
    instance = an_instance()
    job = make_batch(user, provider="vastai").jobs.get()
    Job.objects.filter(pk=job.pk).update(status=Job.Status.CANCELLED)

    assert not services.job_succeed(job_id=job.pk, generation_seconds=12.5, instance_id=instance.pk)
    assert not SpeedSample.objects.exists()


def test_a_machine_known_only_from_its_selftest_is_compared_with_its_model_on_that_clip():
    # The model: self-tests of 5 s and standard clips of 60 s. Scaling a 6 s self-test by work alone would
    # say ≈ 174 s for a standard clip; compared like with like it is 20 % slower than the model: 72 s.
    for machine in (1, 2, 3):
        peer = an_instance(machine_id=machine)
        samples(peer, [5.0], params=SMALL, source="selftest")
        samples(peer, [60.0], params=STANDARD)
    samples(an_instance(machine_id=9), [6.0], params=SMALL, source="selftest")

    estimate = speed.expected_seconds_per_clip(params=STANDARD, machine_id=9, gpu_name="H100 SXM")

    assert (estimate.basis, estimate.samples) == ("machine", 1)
    assert estimate.median == pytest.approx(72.0)
