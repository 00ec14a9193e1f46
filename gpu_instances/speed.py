"""How fast a GPU makes a clip: the measured history, and the expected seconds per clip built from it.

The model: a clip's GPU time is proportional to its work, frames × width × height × steps. A sample
measured with other parameters is scaled to the asked ones by the ratio of their work. Fixed costs (text
encoding, VAE decode) make this optimistic for clips much smaller than the sample and pessimistic the
other way, so samples with exactly the asked parameters are used alone whenever there are enough of them,
a machine that has made other clips than the asked one is compared with its GPU model on those clips
(machine 20 % slower on the self-test → 20 % slower than the model's figure for the asked clip), and the
shipped table keeps a reference clip near each size genhub asks for (the self-test, standard, HD) and
scales from the nearest one.

Where the estimate comes from, first that has samples: this instance's own, its machine's (any earlier
instance on the same host), its GPU model's, the shipped table for the model, and for a model the table
does not know, the slowest model in the table × UNKNOWN_GPU_FACTOR (renting an unknown GPU should need
a price that pays for the risk).

The spread is median ± 1.4826·MAD (the MAD scaled to estimate one standard deviation, robust to one
stalled job), at least MIN_RELATIVE_SPREAD of the median, and widened by (1 + 2/√n) so a handful of
samples never looks certain: one sample gives ±30 %, twelve ±16 % at the floor.
"""

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from gpu_instances.models import GpuInstance, SpeedSample

# Samples per level that an estimate looks at: the recent past describes a machine better than last year.
RECENT_SAMPLES = 200
# Same-parameter samples needed before the others (scaled) are left out.
EXACT_MATCH_SAMPLES = 3
MIN_RELATIVE_SPREAD = 0.10
MAD_TO_SIGMA = 1.4826
UNKNOWN_GPU_FACTOR = 1.5

# Reference clips of the shipped table: (frames, width, height, steps). The first is the self-test's
# default size, the second the `standard` preset at 480p, the third `hd`; all with the 4-step LoRA.
TABLE_CLIPS = ((17, 256, 256, 4), (81, 832, 480, 4), (81, 1280, 720, 4))
# Seconds per clip for each reference clip on an H100 SXM (Wan 2.2 A14B Q4_K_M GGUF in SwarmUI), and every
# other model relative to it. Rough planning figures from relative bf16 throughput and memory bandwidth,
# not measurements: genhub's own history replaces them as soon as it has any.
H100_SXM_SECONDS = (6.0, 60.0, 150.0)
RELATIVE_TO_H100_SXM = {
    "B200": 0.6, "H200": 0.9, "H200 NVL": 0.95, "GH200 SXM": 0.9, "H100 SXM": 1.0, "H100 NVL": 1.1,
    "H100 PCIE": 1.25, "RTX PRO 6000 WS": 1.2, "RTX PRO 6000 S": 1.2, "RTX 5090": 1.4, "A100 SXM4": 1.9,
    "A100 SXM": 1.9, "A100X": 2.0, "A100 PCIE": 2.1, "A800 PCIE": 2.1, "L40S": 1.8, "RTX 4090": 2.0,
    "RTX 6000Ada": 2.1, "L40": 2.4, "RTX A6000": 3.0, "A40": 3.2,
}
SLOWEST_KNOWN = max(RELATIVE_TO_H100_SXM.values())

# A clip with neither width nor height is sized from its resolution at 16:9 (what most stills give).
RESOLUTION_SHORT_SIDE = {"480p": 480, "580p": 580, "720p": 720}
REFERENCE_PARAMS = {"num_frames": 81, "width": 832, "height": 480, "steps": 4}


@dataclass(frozen=True)
class SpeedEstimate:
    median: float
    low: float
    high: float
    samples: int  # 0 for the table and for unknown models
    basis: str  # instance, machine, gpu, table, unknown

    def describe(self) -> str:
        """How the figure was reached, for events and pages: "median 10.0 s of 12 samples"."""
        if self.basis == "table":
            return f"median {self.median:.1f} s from the shipped table"
        if self.basis == "unknown":
            return f"{self.median:.1f} s, an unknown GPU model estimated conservatively"
        where = {"instance": "this instance", "machine": "this machine", "gpu": "this GPU model"}[self.basis]
        return f"median {self.median:.1f} s of {self.samples} sample{'s' if self.samples != 1 else ''} on {where}"


def clip_shape(params: dict) -> tuple[int, int, int, int]:
    """(frames, width, height, steps) of a job's or self-test's parameters."""
    frames = int(params.get("num_frames") or REFERENCE_PARAMS["num_frames"])
    steps = int(params.get("steps") or REFERENCE_PARAMS["steps"])
    width, height = params.get("width"), params.get("height")
    if not (width and height):
        short = RESOLUTION_SHORT_SIDE.get(params.get("resolution"), REFERENCE_PARAMS["height"])
        width, height = int(round(short * 16 / 9 / 16)) * 16, short
    return frames, int(width), int(height), steps


def work(shape: tuple[int, int, int, int]) -> int:
    frames, width, height, steps = shape
    return frames * width * height * steps


def describe_shape(shape: tuple[int, int, int, int]) -> str:
    frames, width, height, steps = shape
    return f"{frames} frames {width}×{height} × {steps} steps"


# --- recording -------------------------------------------------------------------------------


def record_sample(*, instance: GpuInstance, params: dict, seconds: float, source: str) -> SpeedSample:
    frames, width, height, steps = clip_shape(params)
    return SpeedSample.objects.create(instance=instance, machine_id=instance.machine_id, gpu_name=instance.gpu_name,
                                      frames=frames, width=width, height=height, steps=steps,
                                      seconds=float(seconds), source=source)


def record_job_sample(*, instance_id: int | None, params: dict, seconds: float | None) -> SpeedSample | None:
    """A vastai job's measured GPU time becomes history (called by `jobs` when a job succeeds)."""
    if not instance_id or not seconds or seconds <= 0:
        return None
    instance = GpuInstance.objects.filter(pk=instance_id).first()
    if instance is None:
        return None
    return record_sample(instance=instance, params=params, seconds=seconds, source=SpeedSample.Source.JOB)


# --- estimating --------------------------------------------------------------------------------


def expected_seconds_per_clip(*, params: dict, instance: GpuInstance | None = None, machine_id: int | None = None,
                              gpu_name: str | None = None, same_clip_only: bool = False) -> SpeedEstimate:
    """Expected GPU seconds for one clip with `params`, from the most specific history there is.

    With `instance`, its machine and GPU model are taken from it. Samples of a GPU model leave out
    the instances that failed their self-test: a bad host must not make the whole model look slow.
    `same_clip_only` uses only samples of exactly these parameters (else the table): a verdict on a host
    must not rest on figures scaled across clip sizes.
    """
    if instance is not None:
        machine_id = machine_id if machine_id is not None else instance.machine_id
        gpu_name = gpu_name or instance.gpu_name
    shape = clip_shape(params)
    levels = []
    if instance is not None:
        levels.append(("instance", SpeedSample.objects.filter(instance=instance)))
    if machine_id is not None:
        levels.append(("machine", SpeedSample.objects.filter(machine_id=machine_id)))
    model = _rows(model_samples(gpu_name)) if gpu_name else []
    if same_clip_only:
        model = [row for row in model if row[0] == shape]
        levels = [(basis, samples.filter(frames=shape[0], width=shape[1], height=shape[2], steps=shape[3]))
                  for basis, samples in levels]
    for basis, samples in levels:
        estimate = estimate_from_rows(_rows(samples), shape, basis=basis, model=model)
        if estimate:
            return estimate
    return estimate_from_rows(model, shape, basis="gpu") or table_estimate(gpu_name or "", shape)


def model_samples(gpu_name: str):
    return (SpeedSample.objects.filter(gpu_name=gpu_name)
            .exclude(instance__qualification=GpuInstance.Qualification.FAILED))


def _rows(samples) -> list[tuple[tuple[int, int, int, int], float]]:
    """(shape, seconds) of the most recent samples."""
    return [(tuple(row[:4]), row[4]) for row in samples.order_by("-at", "-id").values_list(
        "frames", "width", "height", "steps", "seconds")[:RECENT_SAMPLES]]


def estimate_from_rows(rows, shape, *, basis: str, model=()) -> SpeedEstimate | None:
    """From one level's samples: the same-shape ones alone when there are enough; else, for a machine whose
    GPU model has enough same-shape figures, the model's figure × how this machine compares with its model
    on the clips it did make (like with like, no fixed-cost error); else every sample scaled by work."""
    if not rows:
        return None
    exact = [seconds for row_shape, seconds in rows if row_shape == shape]
    if len(exact) >= EXACT_MATCH_SAMPLES:
        return spread(exact, basis=basis)
    relative = _relative_to_model(rows, shape, model) if model else None
    if relative:
        return spread(relative, basis=basis)
    wanted = work(shape)
    return spread([seconds * wanted / work(row_shape) for row_shape, seconds in rows], basis=basis)


def _relative_to_model(rows, shape, model) -> list[float] | None:
    by_shape = defaultdict(list)
    for row_shape, seconds in model:
        by_shape[row_shape].append(seconds)
    if len(by_shape.get(shape, ())) < EXACT_MATCH_SAMPLES:
        return None
    target = statistics.median(by_shape[shape])
    medians = {row_shape: statistics.median(values) for row_shape, values in by_shape.items()}
    return [target * seconds / medians[row_shape] for row_shape, seconds in rows if row_shape in medians] or None


def spread(values: list[float], *, basis: str) -> SpeedEstimate:
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    half = max(MAD_TO_SIGMA * mad, MIN_RELATIVE_SPREAD * median) * (1 + 2 / math.sqrt(len(values)))
    return SpeedEstimate(median=median, low=max(0.0, median - half), high=median + half, samples=len(values),
                         basis=basis)


def table_estimate(gpu_name: str, shape) -> SpeedEstimate:
    """The shipped figures, scaled from the reference clip nearest in work (±30 %: they are rough)."""
    nearest = min(range(len(TABLE_CLIPS)), key=lambda i: abs(math.log(work(shape) / work(TABLE_CLIPS[i]))))
    seconds = H100_SXM_SECONDS[nearest] * work(shape) / work(TABLE_CLIPS[nearest])
    relative = RELATIVE_TO_H100_SXM.get(gpu_name)
    if relative is None:
        median = seconds * SLOWEST_KNOWN * UNKNOWN_GPU_FACTOR
        return SpeedEstimate(median=median, low=seconds * SLOWEST_KNOWN, high=median * 1.5, samples=0,
                             basis="unknown")
    median = seconds * relative
    return SpeedEstimate(median=median, low=median * 0.7, high=median * 1.3, samples=0, basis="table")


# --- history for operators ----------------------------------------------------------------------


def speed_history(*, machine_id: int | None = None, gpu_name: str | None = None, per_machine: bool = False,
                  limit: int = 2000) -> list[dict]:
    """Measured seconds per clip grouped by GPU model and clip shape (and by machine with `per_machine`):
    median, spread (p25–p75), sample count and how many came from jobs, over the latest `limit` samples."""
    samples = SpeedSample.objects.all()
    if machine_id is not None:
        samples = samples.filter(machine_id=machine_id)
    if gpu_name:
        samples = samples.filter(gpu_name=gpu_name)
    groups = defaultdict(list)
    for gpu, machine, frames, width, height, steps, seconds, source in (
            samples.order_by("-at", "-id").values_list("gpu_name", "machine_id", "frames", "width", "height", "steps",
                                                       "seconds", "source")[:limit]):
        groups[(gpu, machine if per_machine else None, (frames, width, height, steps))].append((seconds, source))
    rows = []
    for (gpu, machine, shape), values in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1] or 0, work(item[0][2]))):
        seconds = sorted(value for value, _ in values)
        quartiles = statistics.quantiles(seconds, n=4, method="inclusive") if len(seconds) > 1 else seconds * 3
        rows.append({"gpu_name": gpu or "?", "machine_id": machine, "shape": describe_shape(shape),
                     "median": statistics.median(seconds), "p25": quartiles[0], "p75": quartiles[2],
                     "samples": len(seconds),
                     "from_jobs": sum(1 for _, source in values if source == SpeedSample.Source.JOB)})
    return rows
