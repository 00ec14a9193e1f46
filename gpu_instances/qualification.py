"""Qualification: a newly ready instance makes one short clip before any user job, and genhub keeps it
only if it is about as fast as its GPU model should be.

vast hosts with the same GPU name differ widely (power or thermal limits, PCIe width, slow disks, other
tenants). Without this genhub would learn that a host is slow only from a batch that takes twice as long
and costs twice as much. The self-test goes through the same SwarmUI client and the same timing as jobs,
so its figure compares with theirs.

An instance is `ready` while it runs the self-test but takes no job (`admits_jobs`); reconcile runs the
test as its next step. Far slower than expected → the instance goes through the orchestrator's fail path
(destroyed, verified; its end reason avoids the machine for VAST_AVOID_MACHINE_HOURS) with the figures in
the event. The self-test's GPU time is billed but attributed to no job, so it is instance overhead.
"""

import io
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from PIL import Image

from gpu_instances import speed
from gpu_instances.generation import timed_generation
from gpu_instances.models import GpuInstance, SpeedSample
from gpu_instances.orchestrator import record
from providers.errors import ProviderError
from providers.swarmui import build_video_params

Q = GpuInstance.Qualification
SELFTEST_PROMPT = "genhub self-test: a still scene"
SELFTEST_SEED = 12345
# Below this many history samples the limit is drawn from the widened band, not the median alone: the
# shipped table and one or two samples are rough, and a wrong rejection costs a whole boot.
HISTORY_SAMPLES_FOR_MEDIAN_LIMIT = 3


def admits_jobs(instance: GpuInstance) -> bool:
    """A ready instance takes user jobs once it passed its self-test, or when qualification is off."""
    return not settings.VAST_QUALIFY or instance.qualified_at is not None


def needs_selftest(instance: GpuInstance) -> bool:
    return instance.state == GpuInstance.State.READY and instance.qualified_at is None


def selftest_params() -> dict:
    width, height = settings.VAST_QUALIFY_SIZE
    return {"num_frames": settings.VAST_QUALIFY_FRAMES, "width": width, "height": height,
            "steps": settings.VAST_QUALIFY_STEPS, "fps": 16, "cfg": 1.0}


def selftest_limit(expected: speed.SpeedEstimate) -> float:
    """Slowest acceptable self-test: tolerance × the median of enough history, else × the band's top."""
    base = expected.median if expected.samples >= HISTORY_SAMPLES_FOR_MEDIAN_LIMIT else expected.high
    return settings.VAST_QUALIFY_TOLERANCE * base


def qualify(orchestrator, instance: GpuInstance) -> str:
    """Runs the self-test on a ready instance (or lets it through when qualification is off)."""
    if not settings.VAST_QUALIFY:
        _mark(instance, Q.SKIPPED, "qualification is off (VAST_QUALIFY=0): taking jobs without a self-test")
        return "qualification skipped"
    params = selftest_params()
    shape = speed.clip_shape(params)
    # Its GPU model's self-tests, not its own or its machine's history: the question is whether this host
    # is as fast as the others of its kind. Only same-clip figures (else the table): job clips scaled down
    # by work would ignore fixed costs and expect too little. Taken before this run's sample joins them.
    expected = speed.expected_seconds_per_clip(params=params, gpu_name=instance.gpu_name, same_clip_only=True)
    request = _selftest_request(params)
    try:
        # The first clip on a fresh instance also loads the models from disk; jobs after it find them
        # loaded. Measuring the second clip compares like with like: with the table, with jobs, with
        # other hosts whatever their disks.
        warmup = 0.0
        if settings.VAST_QUALIFY_WARMUP:
            warmup = timed_generation(instance, {**request, "seed": SELFTEST_SEED + 1})[1]
        _, seconds = timed_generation(instance, request)
    except ProviderError as exc:
        return _could_not_run(orchestrator, instance, exc)
    speed.record_sample(instance=instance, params=params, seconds=seconds, source=SpeedSample.Source.SELFTEST)
    limit = selftest_limit(expected)
    figures = (f"self-test: {seconds:.1f} s for {speed.describe_shape(shape)}; expected ≤ {limit:.1f} s for "
               f"{instance.gpu_name or 'an unknown GPU'} ({expected.describe()})")
    cost = _overhead(instance, seconds + warmup, clips=2 if settings.VAST_QUALIFY_WARMUP else 1)
    if seconds <= limit:
        _mark(instance, Q.PASSED, f"{figures} → qualified; {cost}")
        return f"qualified: self-test {seconds:.1f} s ≤ {limit:.1f} s"
    rejected = _replaced_in_a_row(instance)
    if rejected >= settings.VAST_QUALIFY_MAX_REPLACEMENTS:
        # Every host failing means the expectation is wrong (a rough table entry, a new image), not the
        # hosts: keep this one rather than rent and reject forever. Its sample now teaches the model's figure.
        _mark(instance, Q.PASSED, f"{figures} → kept although slower: the {rejected} hosts before it failed "
                                  f"their self-test too, so the expectation is likely wrong; {cost}")
        return f"kept after {rejected} rejections in a row: self-test {seconds:.1f} s > {limit:.1f} s"
    GpuInstance.objects.filter(pk=instance.pk, qualified_at__isnull=True).update(qualification=Q.FAILED)
    orchestrator.replace(instance, f"{figures} → replacing, avoiding machine {instance.machine_id}; {cost}")
    return f"self-test failed: {seconds:.1f} s > {limit:.1f} s"


def _replaced_in_a_row(instance: GpuInstance) -> int:
    """How many of the instances tested just before this one failed their self-test, in a row."""
    outcomes = (GpuInstance.objects.filter(label=instance.label, created_at__lt=instance.created_at)
                .filter(qualification__in=(Q.PASSED, Q.FAILED)).order_by("-created_at")
                .values_list("qualification", flat=True)[:settings.VAST_QUALIFY_MAX_REPLACEMENTS])
    count = 0
    for outcome in outcomes:
        if outcome != Q.FAILED:
            break
        count += 1
    return count


def _mark(instance: GpuInstance, outcome: str, message: str) -> None:
    # Compare-and-set: a second reconciler (or a replay after a crash) records nothing twice.
    if GpuInstance.objects.filter(pk=instance.pk, state=GpuInstance.State.READY, qualified_at__isnull=True).update(
            qualification=outcome, qualified_at=timezone.now()):
        record(instance, "qualify", message)


def _could_not_run(orchestrator, instance: GpuInstance, error: ProviderError) -> str:
    """A self-test that errors says nothing about speed; try again, and after VAST_QUALIFY_TRIES give the
    machine up like any instance that cannot make a clip."""
    tries = instance.events.filter(kind="qualify_error").count() + 1
    record(instance, "qualify_error", f"self-test could not run ({tries}/{settings.VAST_QUALIFY_TRIES}): "
                                      f"{error.message}")
    if tries >= settings.VAST_QUALIFY_TRIES:
        GpuInstance.objects.filter(pk=instance.pk, qualified_at__isnull=True).update(qualification=Q.FAILED)
        return orchestrator.replace(instance, f"self-test could not run in {tries} tries ({error.message}); "
                                            f"avoiding machine {instance.machine_id}")
    return f"self-test could not run: {error.message}"


def _overhead(instance: GpuInstance, seconds: float, *, clips: int) -> str:
    dph = instance.dph_usd if instance.dph_usd is not None else Decimal("0")
    cost = dph * Decimal(str(round(seconds, 3))) / Decimal(3600)
    what = "2 clips (a warm-up, then the measured one)" if clips == 2 else "1 clip"
    return f"self-test cost ${cost:.4f} for {what} at ${dph:.3f}/h, counted as instance overhead"


def _selftest_request(params: dict) -> dict:
    return build_video_params(
        image=_selftest_image(params["width"], params["height"]), image_content_type="image/png",
        prompt=SELFTEST_PROMPT, negative_prompt="", seed=SELFTEST_SEED, num_frames=params["num_frames"],
        fps=params["fps"], width=params["width"], height=params["height"], steps=params["steps"], cfg=params["cfg"],
        video_model=settings.SWARMUI_VIDEO_MODEL, swap_model=settings.SWARMUI_SWAP_MODEL or None)


def _selftest_image(width: int, height: int) -> bytes:
    """A plain gradient still: enough for the model to animate, made here so nothing is uploaded."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
