"""Chaos soak: a large `vastai` batch and a fal batch beside it on the simulated cloud, with a fault every
few seconds, against the same workload without faults (issue 9 item 11).

Each run gets a fresh scratch database, a real `qcluster` (in a process group of its own, so a fault can
SIGKILL all of it), a simulated vast.ai cloud (each instance runs its own simulated SwarmUI) and a simulated
fal queue. genhub's own loops keep their production pacing; only the simulated machines are fast.

Faults are drawn (seeded) from `FAULTS`, a registry of small injector functions: a new fault is one
function with the `@fault` decorator. A drawn fault that cannot apply right now (no ready instance, no fal
work left) gives way to another one that can. Faults are injected for as long as the fault-free run took
(`--fault-window` overrides), then the run drains. Every fault of issue 9 is here. Faults that last a
while (an `offline` blip, a used-up search quota, a full disk) last tens of seconds, not vast's hours, and a
slow create outlasts a create timeout lowered to `CREATE_TIMEOUT_SECONDS`: the soak sees each kind several
times. For `storage_fails` MEDIA_ROOT is a tmpfs of its own (mounting needs root; without it that fault is
left out) that is filled to ENOSPC and freed again, so genhub meets a really full disk; the pending area is
on another disk beside it, as the README advises (so the GPU goes on while fal holds).

Everything counted as generated comes from the simulators' own records (`generation_counts`, keyed by
the seed, which genhub sends and which this script makes unique per job), not from genhub's database.
The watchdog's stall floor is scaled down with the simulated GPU too (`SIMULATED_GPU`, and why).

What is counted:

- lost: jobs not in a terminal state at the end, and accepted jobs missing from the database;
- succeeded twice: jobs whose clip was generated (finished on a GPU / completed at fal) more than once,
  not counting a copy that a fault's lost machine took with it before anyone had fetched it (nothing can
  collect that; those are counted on their own as "remade");
- paid attempts wasted: GPU generations and fal submissions beyond the one clip each succeeded job kept;
- instances leaked: labelled simulated instances alive that no active database row owns (at the end of the
  work), and any still alive after `destroy_instance` and a bounded wait;
- recovery: for each injection, until a job finished on every provider that had work waiting then
  (for instance faults also: until a replacement instance was ready); median and max per fault kind;
- GPU making no clip: the time between kept clips on the GPU (self-tests, interrupted or lost generations,
  machines being bought count as idle), each second of a longer gap put down to the latest GPU-side fault
  before it;
- makespan: submission → last job finished, against the fault-free run.

Run (the fault-free run takes about 5 minutes on 2 shared cores; the faulted one as long as genhub needs,
at most `--time-limit`):
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.chaos_soak
  [--jobs 300] [--fal-jobs 60] [--fault-every 5] [--seed 1] [--generation-seconds 0.5] [--no-faults]
  [--skip-baseline] [--faults instance_kill,qcluster_sigkill] [--fault-window S] [--time-limit S]
"""

import argparse
import bisect
import io
import itertools
import logging
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmarks.harness import Cluster, scratch_database, terminate_backends

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402
from django.db.models import Count  # noqa: E402

from gpu_instances.models import GpuInstance  # noqa: E402
from jobs import services  # noqa: E402
from jobs.intake import UploadedFile, build_batch  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.schedules import schedules_ensure  # noqa: E402
from providers.simulators.fal import FalSimulator  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.vastai import VastAISimulator, default_offers, make_offer  # noqa: E402

FRAMES = 17
IMAGES = 8  # distinct input images; the seed, not the image, tells jobs apart
VAST_SEED_BASE, FAL_SEED_BASE = 1, 1_000_000
FAL_CONCURRENCY = 10  # the simulated account's limit; a fault lowers it for a while
MARKET_EXTRA_MACHINES = 60
TICK = 0.25  # seconds between looks at the database and the fault clock

# genhub's production pacing (the harness runs under test settings, which speed these up).
PRODUCTION_PACING = dict(VAST_DISPATCH_INTERVAL=1.0, GENHUB_RECONCILE_INTERVAL=5, GENHUB_RECONCILE_SECONDS=50,
                         VAST_PACING_SCALE=1, GENHUB_PUMP_SECONDS=60, FAL_POLL_INTERVAL=5, HTTP_BACKOFF_SECONDS=1,
                         Q_POLL=1.0)

# The progress watchdog's floor (production 90 s) is there for a real GPU's first model load and its silent
# video decode; the simulated GPU has neither and makes a clip in `--generation-seconds`. Like the faults that
# last a while, it is scaled down with the machines: at 90 s every passing wedge would idle the soak's GPU for
# 180 clips' time. The stall limit genhub derives from its own measured steps is unchanged.
SIMULATED_GPU = dict(SWARMUI_STALL_FLOOR_SECONDS=15)

# How long the faults that last a while last. Scaled down like the simulated machines, so that a soak sees
# each kind several times; each is still longer than genhub's probe hysteresis and retry backoffs.
OFFLINE_SECONDS = 20  # vast's `offline` blips are mostly brief (vastai-api.md § statuses)
SEARCH_QUOTA_SECONDS = 60  # vast resets the daily quota at UTC midnight; here "midnight" is a minute away
DISK_FULL_SECONDS = 20
# A slow create answers after genhub's create read timeout, which the soak lowers from vast CLI's 120 s to
# this (set on the cluster below), so an unanswered create costs the soak seconds, not minutes.
CREATE_TIMEOUT_SECONDS = 8
SLOW_CREATE_SECONDS = 12
MEDIA_DISK = "256m"  # the tmpfs MEDIA_ROOT lives on during the soak, so that it can really fill up

@dataclass
class Fault:
    name: str
    inject: object  # (World) -> str | None: what was done, or None when it cannot apply now
    affects: tuple[str, ...]  # providers whose next finished job ends the recovery
    instance: bool = False  # also measure until a replacement instance is ready


FAULTS: dict[str, Fault] = {}


def fault(name: str, *, affects=("vastai", "fal"), instance: bool = False):
    def register(function):
        FAULTS[name] = Fault(name, function, tuple(affects), instance)
        return function
    return register


@dataclass
class Injection:
    kind: str
    at: float  # wall clock, comparable with the database's timestamps
    detail: str
    waiting: tuple[str, ...]  # providers of `affects` that had unfinished jobs at that moment


@dataclass
class World:
    """What the injectors may touch."""

    vast: VastAISimulator
    fal: FalSimulator
    cluster: Cluster
    later: list = field(default_factory=list)  # (wall clock, action): undoing a fault that lasts a while
    disk: "MediaDisk | None" = None  # MEDIA_ROOT's tmpfs, when it could be mounted

    def ready_instance(self):
        """genhub's ready instance and the simulated one behind it, if both are up."""
        instance = GpuInstance.objects.filter(state=GpuInstance.State.READY, vast_id__isnull=False).first()
        if instance is None:
            return None
        sim = self.vast.instances.get(instance.vast_id)
        if sim is None or sim.state != "running" or sim.swarmui is None:
            return None
        return instance


@fault("instance_kill", affects=("vastai",), instance=True)
def instance_kill(world: World):
    instance = world.ready_instance()
    if instance is None:
        return None
    world.vast.kill_instance(instance.vast_id, mode="exited")
    return f"vast #{instance.vast_id} exited"


@fault("instance_vanish", affects=("vastai",), instance=True)
def instance_vanish(world: World):
    instance = world.ready_instance()
    if instance is None:
        return None
    world.vast.kill_instance(instance.vast_id, mode="vanish")
    return f"vast #{instance.vast_id} vanished"


@fault("swarmui_session_expiry", affects=("vastai",))
def swarmui_session_expiry(world: World):
    instance = world.ready_instance()
    if instance is None:
        return None
    world.vast.instances[instance.vast_id].swarmui.expire_sessions()
    return f"sessions of vast #{instance.vast_id} expired"


@fault("pg_terminate_backend")
def pg_terminate(world: World):
    return f"{terminate_backends()} connections terminated"


@fault("qcluster_sigkill")
def qcluster_sigkill(world: World):
    world.cluster.kill()
    world.cluster.start()  # as a supervisor would (systemd Restart=always)
    return f"process group SIGKILLed, started again (start {world.cluster.starts})"


@fault("fal_5xx", affects=("fal",))
def fal_5xx(world: World):
    world.fal.inject("submit_500", 2)
    world.fal.inject("status_503", 3)
    return "2 submits answer 500, 3 status polls 503"


@fault("fal_429", affects=("fal",))
def fal_429(world: World):
    world.fal.inject("submit_429", 3)
    return "3 submits answer 429"


@fault("fal_result_5xx_after_completed", affects=("fal",))
def fal_result_5xx(world: World):
    world.fal.inject("result_500", 3)
    return "3 result fetches of COMPLETED requests answer 500"


@fault("fal_account_concurrency", affects=("fal",))
def fal_account_concurrency(world: World):
    """A new fal account runs 2 requests at once; the rest wait IN_QUEUE (what genhub sees for 30 s)."""
    if world.fal.concurrency != FAL_CONCURRENCY:
        return None
    world.fal.concurrency = 2
    world.later.append((time.time() + 30, lambda: setattr(world.fal, "concurrency", FAL_CONCURRENCY)))
    return "account concurrency 2 for 30 s"


@fault("swarmui_wedged_queue", affects=("vastai",))
def swarmui_wedged_queue(world: World):
    """SwarmUI's queue stops (upstream issue #1219): the next generation to get the GPU stops after its first
    step while its WebSocket gets keep-alives and every status route answers. Once: a passing wedge, which
    genhub's watchdog must interrupt and requeue (a machine that wedges every time is `wedge(True)`)."""
    instance = world.ready_instance()
    if instance is None:
        return None
    world.vast.instances[instance.vast_id].swarmui.wedge(1)
    return f"the next generation on vast #{instance.vast_id} wedges"


@fault("vast_offline_blip", affects=("vastai",))
def vast_offline_blip(world: World):
    """vast loses contact with the host: `offline` for a while, then `running`; SwarmUI keeps serving."""
    instance = world.ready_instance()
    if instance is None:
        return None
    world.vast.offline(instance.vast_id, seconds=OFFLINE_SECONDS)
    return f"vast #{instance.vast_id} offline for {OFFLINE_SECONDS} s"


@fault("vast_search_quota_exceeded", affects=("vastai",))
def vast_search_quota_exceeded(world: World):
    """Every offer search answers 429 `search_quota_exceeded`, with `X-RateLimit-Reset`, until the reset
    (the simulated vast resets it at that time by itself, as vast does)."""
    if world.vast.search_quota_exhausted:
        return None
    world.vast.exhaust_search_quota(reset_at=time.time() + SEARCH_QUOTA_SECONDS)
    return f"search quota used up for {SEARCH_QUOTA_SECONDS} s"


@fault("vast_slow_create", affects=("vastai",))
def vast_slow_create(world: World):
    """The next create answers only after genhub's read timeout: vast either rented at once (the answer is
    late) or acts late (the instance appears after genhub gave up waiting); both happen on the real API."""
    if world.vast.slow_creates_waiting:
        return None  # one is still waiting for a create
    make = random.Random(time.time_ns()).choice(("before", "after"))
    world.vast.slow_create(1, seconds=SLOW_CREATE_SECONDS, make=make)
    return f"the next create answers after {SLOW_CREATE_SECONDS} s (instance made {make} the answer)"


@fault("storage_fails")
def storage_fails(world: World):
    """MEDIA_ROOT (a small tmpfs for the soak) fills up: every write gets ENOSPC until it is freed."""
    if world.disk is None or world.disk.full:
        return None
    world.disk.fill()
    world.later.append((time.time() + DISK_FULL_SECONDS, world.disk.free))
    return f"MEDIA_ROOT full (ENOSPC) for {DISK_FULL_SECONDS} s"


class MediaDisk:
    """MEDIA_ROOT on a tmpfs of its own, so that `storage_fails` fills a real filesystem (as root: mounting
    needs it, and root's writes ignore permissions, so a full disk is the real way writes fail)."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / ".chaos-filler"
        self.full = False

    def mount(self) -> "MediaDisk | None":
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={MEDIA_DISK}", "genhub-chaos-media",
                               str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"storage_fails cannot apply: a tmpfs at MEDIA_ROOT needs root ({done.stderr.strip()})")
            return None
        return self

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as handle:
            chunk = b"\0" * (1 << 20)
            try:
                while handle.write(chunk):
                    pass
            except OSError:  # ENOSPC: full
                pass
        self.full = True

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.full = False

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    label: str
    makespan: float
    jobs: dict  # provider -> Counter of statuses
    missing: dict  # provider -> accepted jobs absent from the database
    started: dict  # provider -> Counter seed -> generations started / submissions accepted
    completed: dict  # provider -> Counter seed -> clips generated
    seeds: dict  # provider -> list of the seeds it submitted
    injections: list
    recoveries: dict  # kind -> list of seconds (None: not recovered before the end)
    replacements: dict  # kind -> list of seconds until a replacement was ready
    failures: dict  # provider -> Counter of error codes of failed jobs
    unowned: int
    not_destroyed: int
    rented: int  # instances bought over the run
    most_alive: int  # labelled instances alive at once, at most
    inapplicable: Counter  # kind -> times it was drawn when it could not apply
    cluster_starts: int
    timed_out: bool
    log: Path
    gaps: dict  # stage -> seconds, per replacement (see `replacement_gaps`)
    twice: list  # what is known of each vastai clip generated more than once (`clips_made_twice`)
    lost_copies: Counter  # vastai seed -> clips of it a lost machine took before they were fetched
    idle: "GpuIdle"  # where the GPU's time went that made no clip (`gpu_idle`)


def submit(owner, provider: str, count: int, seed_base: int):
    images = [UploadedFile(f"{provider}-{i}.png", make_image(color=(i * 31 % 256, 90, 200 - i * 20)))
              for i in range(min(IMAGES, count))]
    rows = "file,prompt,negative_prompt,seed\n" + "".join(
        f"{provider}-{i % IMAGES}.png,slow push-in {i},,{seed_base + i}\n" for i in range(count))
    spec = build_batch(provider=provider, prompt="slow push-in", files=images, rows_text=rows,
                       params={"num_frames": FRAMES})
    return services.batch_create(owner=owner, spec=spec)


def market() -> list[dict]:
    """The simulator's offers plus many more acceptable machines: genhub avoids a machine whose instance
    failed, and the default four would be used up after four instance faults (a real market has hundreds)."""
    return default_offers() + [make_offer(300 + i, 9300 + i, "H100 SXM", round(2.0 + i * 0.01, 2))
                               for i in range(MARKET_EXTRA_MACHINES)]


def unfinished_by_provider() -> dict:
    rows = Job.objects.filter(status__in=Job.UNFINISHED).values("provider").annotate(n=Count("id"))
    return {row["provider"]: row["n"] for row in rows}


def draw(rng: random.Random, world: World, kinds: list[str], waiting: dict, inapplicable: Counter):
    """The drawn fault, or the next one in a seeded shuffle that can apply now: one that touches a provider
    with work left, and whose injector finds what it needs (e.g. a ready instance)."""
    names = [name for name in kinds if any(waiting.get(p) for p in FAULTS[name].affects)]
    if not names:
        return None, None
    first = rng.choice(names)
    rest = [name for name in names if name != first]
    rng.shuffle(rest)
    for name in [first, *rest]:
        detail = FAULTS[name].inject(world)
        if detail is not None:
            return name, detail
        if name == first:
            inapplicable[name] += 1
    return None, None


def run(args, *, faults: bool, fault_window: float, label: str, disk: "MediaDisk | None") -> RunResult:
    rng = random.Random(args.seed)
    log = Path(tempfile.gettempdir()) / f"genhub-chaos-{label.replace(' ', '-')}-qcluster.log"
    log.write_text("")
    with scratch_database():
        schedules_ensure()  # production has the minute schedules: they are the safety net
        owner = get_user_model().objects.create_user("chaos", password="chaos-password-1")
        vast = fal = cluster = None
        try:
            vast = VastAISimulator(settings.VAST_API_KEY, boot_seconds=2, loading_seconds=2, offers=market(),
                                   swarmui_generation_seconds=args.generation_seconds).start()
            vast.enforce_rate_limits()  # vast's per-endpoint thresholds, as the real API answers them
            fal_run = max(1.0, args.jobs * args.generation_seconds * FAL_CONCURRENCY / max(1, args.fal_jobs))
            fal = FalSimulator(settings.FAL_KEY, queue_seconds=0.5, run_seconds=fal_run,
                               concurrency=FAL_CONCURRENCY).start()
            settings.VAST_API_URL, settings.FAL_QUEUE_URL = vast.url, fal.url
            cluster = Cluster(log, **PRODUCTION_PACING, **SIMULATED_GPU,
                              VAST_CREATE_TIMEOUT_SECONDS=CREATE_TIMEOUT_SECONDS).start()
            world = World(vast, fal, cluster, disk=disk)

            started_at, started_mono = time.time(), time.monotonic()
            batches = {"vastai": submit(owner, "vastai", args.jobs, VAST_SEED_BASE)}
            if args.fal_jobs:
                batches["fal"] = submit(owner, "fal", args.fal_jobs, FAL_SEED_BASE)
            loop = soak(args, world, rng, started_at, kinds=args.faults if faults else [], fault_window=fault_window)
            ends = {p: b.jobs.exclude(finished_at=None).order_by("-finished_at").values_list("finished_at", flat=True)
                    .first() for p, b in batches.items()}
            finished = [end.timestamp() for end in ends.values() if end]
            makespan = (max(finished) if finished else time.time()) - started_at

            jobs = {p: Counter(b.jobs.values_list("status", flat=True)) for p, b in batches.items()}
            expected = {"vastai": args.jobs, "fal": args.fal_jobs}
            missing = {p: expected[p] - sum(counts.values()) for p, counts in jobs.items()}
            failures = {p: Counter(b.jobs.filter(status=Job.Status.FAILED).values_list("error_code", flat=True))
                        for p, b in batches.items()}
            recoveries, replacements = recovery_times(loop["injections"])
            gaps = replacement_gaps()
            unowned, not_destroyed = leaks(vast)
            return RunResult(
                label=label, makespan=makespan, jobs=jobs, missing=missing,
                started={"vastai": vast.generation_counts(), "fal": fal.generation_counts()},
                completed={"vastai": vast.generation_counts(completed=True),
                           "fal": fal.generation_counts(completed=True)},
                seeds={"vastai": [VAST_SEED_BASE + i for i in range(args.jobs)],
                       "fal": [FAL_SEED_BASE + i for i in range(args.fal_jobs)]},
                injections=loop["injections"], recoveries=recoveries, replacements=replacements, failures=failures,
                unowned=unowned, not_destroyed=not_destroyed, rented=len(vast.instances),
                most_alive=loop["most_alive"], inapplicable=loop["inapplicable"], cluster_starts=cluster.starts,
                timed_out=loop["timed_out"], log=log, gaps=gaps, twice=clips_made_twice(vast, started_mono),
                lost_copies=copies_lost_with_machine(vast),
                idle=gpu_idle(vast, started_mono, started_at, args.jobs, loop["injections"]))
        finally:
            if cluster is not None:
                cluster.stop()
            for sim in (vast, fal):
                if sim is not None:
                    sim.stop()


def soak(args, world: World, rng: random.Random, started_at: float, *, kinds: list[str], fault_window: float):
    """Watches the work to its end (or the time limit), injecting a fault every `fault_every` s (±50 %)
    while within the fault window."""
    injections: list[Injection] = []
    inapplicable = Counter()
    most_alive = 0
    next_fault = started_at + args.fault_every
    deadline = started_at + args.time_limit
    timed_out = False
    try:
        while True:
            now = time.time()
            for item in [item for item in world.later if item[0] <= now]:
                world.later.remove(item)
                item[1]()
            most_alive = max(most_alive, len(live_labelled(world.vast)))
            waiting = unfinished_by_provider()
            if not waiting:
                break
            if now >= deadline:
                timed_out = True
                break
            cluster = world.cluster
            if cluster.process is not None and cluster.process.poll() is not None:
                print(f"  {now - started_at:7.1f} s  the cluster exited by itself (code {cluster.process.returncode}); "
                      "started again", flush=True)
                cluster.process = None  # as a supervisor would
                cluster.start()
            if kinds and now >= next_fault and now - started_at < fault_window:
                kind, detail = draw(rng, world, kinds, waiting, inapplicable)
                if kind is not None:
                    affected = tuple(p for p in FAULTS[kind].affects if waiting.get(p))
                    injections.append(Injection(kind, now, detail, affected))
                    print(f"  {now - started_at:7.1f} s  {kind}: {detail}", flush=True)
                next_fault = now + args.fault_every * rng.uniform(0.5, 1.5)
            time.sleep(TICK)
    finally:
        for _, undo in world.later:  # a fault that lasts a while ends with the run
            undo()
        world.later.clear()
    return {"injections": injections, "inapplicable": inapplicable, "most_alive": most_alive, "timed_out": timed_out}


def recovery_times(injections: list[Injection]):
    done = defaultdict(list)
    for provider, finished in Job.objects.filter(status=Job.Status.SUCCEEDED).values_list("provider", "finished_at"):
        done[provider].append(finished.timestamp())
    for times in done.values():
        times.sort()
    ready = sorted(t.timestamp() for t in GpuInstance.objects.exclude(ready_at=None).values_list("ready_at", flat=True))
    recoveries, replacements = defaultdict(list), defaultdict(list)
    for injection in injections:
        ends = []
        for provider in injection.waiting:
            times = done[provider]
            index = bisect.bisect_right(times, injection.at)
            ends.append(times[index] if index < len(times) else None)
        if ends:
            recoveries[injection.kind].append(None if None in ends else max(ends) - injection.at)
        if FAULTS[injection.kind].instance:
            index = bisect.bisect_right(ready, injection.at)
            replacements[injection.kind].append(ready[index] - injection.at if index < len(ready) else None)
    return recoveries, replacements


STAGES = ("detect", "buy", "boot", "start")


def replacement_gaps() -> dict:
    """For each instance after the first, the stretch with no GPU for the vastai work, by stage:

    - detect: the old instance given up (→ `destroying`) → the replacement requested (a new row);
    - buy: requested → rented (search, create; an unanswered create and its adoption land here);
    - boot: rented → SwarmUI ready (the simulated machine's own boot, plus genhub's polling of it);
    - start: ready → the first job placed on it (the self-test, then dispatch).
    Stages are measured from the database's own timestamps."""
    from django.db.models import Min

    from gpu_instances.models import InstanceEvent

    def first_event(instance, **fields):
        return InstanceEvent.objects.filter(instance=instance, **fields).aggregate(at=Min("at"))["at"]

    rows = list(GpuInstance.objects.exclude(label="").filter(state_changed_at__isnull=False).order_by("created_at"))
    gaps = defaultdict(list)
    for previous, instance in itertools.pairwise(rows):
        lost = first_event(previous, to_state=GpuInstance.State.DESTROYING)
        rented = first_event(instance, to_state=GpuInstance.State.LOADING)
        first_job = Job.objects.filter(instance=instance).aggregate(at=Min("started_at"))["at"]
        marks = [lost, instance.created_at, rented, instance.ready_at, first_job]
        if None in marks:
            continue  # released unrented, or never served: no stretch of its own to measure
        for stage, (start, end) in zip(STAGES, itertools.pairwise(marks), strict=True):
            gaps[stage].append(max(0.0, (end - start).total_seconds()))
    return gaps


def _generations(vast: VastAISimulator):
    """(instance, generation) for every generation on every instance ever rented."""
    return [(inst, g) for inst in list(vast.instances.values()) if inst.swarmui
            for g in list(inst.swarmui.generations)]


def _taken_by_lost_machines(vast: VastAISimulator) -> set[tuple[int, str]]:
    """(instance, output path) of each clip nobody fetched before a fault took its machine (exited or
    vanished): it cannot be collected."""
    taken = set()
    for inst in list(vast.instances.values()):
        if inst.lost_by and inst.swarmui:
            fetched = inst.swarmui.fetched_outputs()
            taken |= {(inst.id, g.output_path) for g in list(inst.swarmui.generations)
                      if g.output_path and g.output_path not in fetched}
    return taken


def copies_lost_with_machine(vast: VastAISimulator) -> Counter:
    taken = _taken_by_lost_machines(vast)
    return Counter(g.params.get("seed") for inst, g in _generations(vast) if (inst.id, g.output_path) in taken)


def clips_made_twice(vast: VastAISimulator, started_mono: float) -> list[str]:
    """For each vastai clip generated to the end more than once: its job and every generation of it (instance,
    the attempt's tag, when it ran, how it ended), so that a double can be traced to its faults."""
    by_seed = defaultdict(list)
    for inst, generation in _generations(vast):
        by_seed[generation.params.get("seed")].append((inst, generation))
    taken = _taken_by_lost_machines(vast)
    lines = []
    for seed, gens in sorted(by_seed.items()):
        if sum(1 for _, g in gens if g.output_path) < 2:
            continue
        job = Job.objects.filter(seed=seed, provider="vastai").values("uuid", "attempts", "claims", "status").first()
        if job is None:
            continue  # the self-test's clip, made once on each instance
        lines.append(f"seed {seed}, job {job}:")
        for inst, g in gens:
            tag = (g.params.get("extra_metadata") or {}).get("genhub_work", "")
            ended = f"{g.finished_at - started_mono:.1f} s" if g.finished_at else "—"
            lost = " (never fetched: its machine was lost)" if (inst.id, g.output_path) in taken else ""
            lines.append(f"    vast #{inst.id} {tag}: {g.started_at - started_mono:.1f} s → {ended}, "
                         f"{g.error or ('clip ' + g.output_path.rsplit('/', 1)[-1] if g.output_path else 'no clip')}"
                         f"{lost}")
    return lines


# Shorter gaps between two clips are the pipeline's own (a worker's dispatch, a pump pass), not a fault's.
PIPELINE_GAP_SECONDS = 2.0


@dataclass
class GpuIdle:
    window: float  # from the first clip's start to the last clip's end
    idle: float  # of which no generation was making a clip that was kept
    short: float  # in gaps under PIPELINE_GAP_SECONDS
    after: Counter  # fault kind (or "no fault") -> seconds of longer gaps while it was the newest fault


def gpu_idle(vast: VastAISimulator, started_mono: float, started_at: float, jobs: int,
             injections: list[Injection]) -> GpuIdle:
    """The GPU time that made no clip, from the simulators' records: a generation counts only when it was a
    job's (not a self-test) and ended with its clip; an interrupted, wedged or killed one is idle time like a
    machine being bought. Each second of a gap of PIPELINE_GAP_SECONDS or more goes to the latest fault
    injected (on the GPU's side) before it: faults that overlap share a gap by when each came, so a kind's
    figure is what the GPU lost while it was the newest trouble, not what it would cost alone."""
    seeds = range(VAST_SEED_BASE, VAST_SEED_BASE + jobs)
    busy = sorted((g.started_at, g.finished_at) for _, g in _generations(vast)
                  if g.output_path and g.finished_at and g.params.get("seed") in seeds)
    if not busy:
        return GpuIdle(0.0, 0.0, 0.0, Counter())
    faults = sorted((i.at - started_at + started_mono, i.kind) for i in injections
                    if "vastai" in FAULTS[i.kind].affects)
    idle = short = 0.0
    after = Counter()
    end = busy[0][1]
    for start, finish in busy[1:]:
        gap = start - end
        if gap > 0:
            idle += gap
            if gap < PIPELINE_GAP_SECONDS:
                short += gap
            else:
                _share_gap(end, start, faults, after)
        end = max(end, finish)
    return GpuIdle(end - busy[0][0], idle, short, after)


def _share_gap(begin: float, end: float, faults: list[tuple[float, str]], after: Counter) -> None:
    """Each second of the gap goes to the latest fault injected before it."""
    index = bisect.bisect_right(faults, (begin, "~"))
    current = faults[index - 1][1] if index else "no fault"
    for at, kind in faults[index:]:
        if at >= end:
            break
        after[current] += at - begin
        begin, current = at, kind
    after[current] += end - begin


def live_labelled(vast: VastAISimulator) -> set[int]:
    return {r["id"] for r in vast.instance_records()
            if r["label"] == settings.GENHUB_INSTANCE_LABEL and r["state"] not in ("destroyed", "vanished")}


def leaks(vast: VastAISimulator, timeout: float = 60) -> tuple[int, int]:
    """(alive and unowned when the work ended, alive after `destroy_instance` and a bounded wait)."""
    owned = set(GpuInstance.objects.filter(state__in=GpuInstance.ACTIVE_STATES, vast_id__isnull=False)
                .values_list("vast_id", flat=True))
    unowned = len(live_labelled(vast) - owned)
    try:
        call_command("destroy_instance", "--yes", "--reason", "operator: end of chaos soak", stdout=io.StringIO())
    except CommandError as exc:
        print(f"  destroy_instance: {exc}")
    deadline = time.monotonic() + timeout
    while live_labelled(vast) and time.monotonic() < deadline:
        time.sleep(1)  # the cluster's reconcile finishes destroys and sweeps leaks
    return unowned, len(live_labelled(vast))


# --- the report ------------------------------------------------------------------------------------------------


def spread(values) -> str:
    known = [v for v in values if v is not None]
    text = f"median {statistics.median(known):6.1f} s, max {max(known):6.1f} s" if known else "never"
    missed = len(values) - len(known)
    return text + (f", {missed} not recovered before the end" if missed else "")


def report(result: RunResult, baseline: RunResult | None):
    print(f"\n== {result.label}: makespan {result.makespan:.1f} s"
          f"{' (TIME LIMIT REACHED)' if result.timed_out else ''}, cluster started {result.cluster_starts}×, "
          f"its log: {result.log}")
    totals = Counter()
    for provider in result.jobs:
        statuses, started, completed = result.jobs[provider], result.started[provider], result.completed[provider]
        seeds = result.seeds[provider]
        unfinished = sum(n for status, n in statuses.items() if status not in Job.TERMINAL)
        lost = unfinished + max(0, result.missing[provider])
        lost_copies = result.lost_copies if provider == "vastai" else Counter()
        twice = sum(1 for seed in seeds if completed[seed] - lost_copies[seed] > 1)
        remade = sum(1 for seed in seeds if completed[seed] > 1 and lost_copies[seed])
        per_job = [started[seed] for seed in seeds] or [0]
        wasted = sum(started[seed] for seed in seeds) - statuses.get(Job.Status.SUCCEEDED, 0)
        unit = "GPU generations" if provider == "vastai" else "fal submissions"
        failures = ", ".join(f"{code or '?'} ×{n}" for code, n in result.failures[provider].most_common())
        print(f"  {provider:6}: succeeded {statuses.get(Job.Status.SUCCEEDED, 0)}, failed "
              f"{statuses.get(Job.Status.FAILED, 0)}{f' ({failures})' if failures else ''}, lost {lost}, "
              f"succeeded twice {twice}{f' (+{remade} remade: a lost machine took the first)' if remade else ''}; "
              f"{unit} per job: mean {statistics.fmean(per_job):.2f}, max {max(per_job)}; "
              f"paid attempts wasted {wasted}")
        totals.update(lost=lost, twice=twice, remade=remade, wasted=wasted)
    print(f"  total : lost {totals['lost']}, succeeded twice {totals['twice']} (remade {totals['remade']}), "
          f"paid attempts wasted "
          f"{totals['wasted']}; instances leaked: {result.unowned} unowned at the end, {result.not_destroyed} "
          f"alive after destroy_instance; {result.rented} rented, at most {result.most_alive} alive at once")
    for line in result.twice:
        print(f"    twice: {line}")
    if result.injections:
        print(f"  {len(result.injections)} faults; recovery (→ next job finished on each provider that was waiting):")
        for kind in sorted(FAULTS):
            count = sum(1 for i in result.injections if i.kind == kind)
            skipped = result.inapplicable[kind]
            if not count and not skipped:
                continue
            line = f"    {kind:32} ×{count:<3} {spread(result.recoveries.get(kind, [])) if count else ''}"
            if count and kind in result.replacements:
                line += f"; → replacement ready: {spread(result.replacements[kind])}"
            if skipped:
                line += f" (drawn {skipped}× when it could not apply)"
            print(line)
    if result.gaps.get("detect"):
        stages = ", ".join(f"{stage} {sum(result.gaps[stage]):.0f} s (median "
                           f"{statistics.median(result.gaps[stage]):.1f})" for stage in STAGES)
        total = sum(sum(values) for values in result.gaps.values())
        print(f"  no GPU between instances: {total:.0f} s over {len(result.gaps['detect'])} replacements — {stages}")
    idle = result.idle
    if idle.window:
        print(f"  GPU making no clip: {idle.idle:.0f} s of {idle.window:.0f} s ({idle.short:.0f} s in gaps under "
              f"{PIPELINE_GAP_SECONDS:.0f} s between clips)" + (f"; fault-free run: {baseline.idle.idle:.0f} s of "
                                                                f"{baseline.idle.window:.0f} s" if baseline else ""))
        if idle.after:
            print("    longer gaps, each second by the latest GPU-side fault before it: " + ", ".join(
                f"{kind} {seconds:.0f} s" for kind, seconds in idle.after.most_common()))
    if baseline is not None:
        print(f"  makespan vs fault-free: {result.makespan:.1f} / {baseline.makespan:.1f} s = "
              f"{result.makespan / baseline.makespan:.2f}× (goal ≤ 1.3)")


def fault_names(text: str) -> list[str]:
    names = sorted({name.strip() for name in text.split(",") if name.strip()})
    unknown = [name for name in names if name not in FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown fault {', '.join(unknown) or '(none given)'}; known: "
                                         f"{', '.join(sorted(FAULTS))}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300, help="vastai jobs")
    parser.add_argument("--fal-jobs", type=int, default=60, help="fal jobs beside them")
    parser.add_argument("--fault-every", type=float, default=5.0, help="mean seconds between faults (±50 %%)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault draws")
    parser.add_argument("--generation-seconds", type=float, default=0.5, help="simulated GPU time per clip")
    parser.add_argument("--no-faults", action="store_true", help="only the fault-free run")
    parser.add_argument("--skip-baseline", action="store_true", help="only the run with faults (no makespan ratio)")
    parser.add_argument("--fault-window", type=float, default=None,
                        help="inject faults for this many seconds [the fault-free makespan, else jobs × T × 1.5]")
    parser.add_argument("--time-limit", type=float, default=1200, help="seconds a run may take before it is cut")
    parser.add_argument("--faults", type=fault_names, default=sorted(FAULTS),
                        help=f"comma-separated subset of: {', '.join(sorted(FAULTS))} [all]")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM both unwind through the clean-up (cluster, simulators, scratch database), also when
    # started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.disable(logging.INFO)  # this process's own INFO lines; the cluster logs to its file

    print(f"chaos soak: {args.jobs} vastai + {args.fal_jobs} fal jobs, T = {args.generation_seconds} s, "
          f"a fault every ~{args.fault_every} s (seed {args.seed}), started {datetime.now():%H:%M:%S}, "
          f"media in {settings.MEDIA_ROOT}")
    print(f"faults: {', '.join(args.faults)}")
    media = Path(settings.MEDIA_ROOT)
    disk = MediaDisk(media).mount() if "storage_fails" in args.faults else None
    try:
        baseline = None
        if not args.skip_baseline or args.no_faults:
            baseline = run(args, faults=False, fault_window=0, label="fault-free", disk=disk)
            report(baseline, None)
        if args.no_faults:
            return
        window = args.fault_window or (baseline.makespan if baseline else args.jobs * args.generation_seconds * 1.5)
        chaos = run(args, faults=True, fault_window=window, label="with faults", disk=disk)
        report(chaos, baseline)
    finally:
        if disk is not None:
            disk.unmount()
        if media.name.startswith("genhub-bench-media-"):  # the harness's own temporary folders, nobody else's
            shutil.rmtree(media, ignore_errors=True)
            shutil.rmtree(media.with_name(media.name + "-pending"), ignore_errors=True)  # kept paid results


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: cluster stopped, simulators stopped, scratch database dropped")
        raise SystemExit(130) from None
