"""System checks that refuse to start genhub with a task-queue configuration that runs tasks twice."""

from math import ceil

from django.conf import settings
from django.core.checks import Error, register


def redelivery_bound(conf: dict) -> int:
    """Worst time from a task's pick-up to its acknowledgement (see genhub/checks.py).

    The ORM broker locks a row for `retry` seconds at pick-up; the row may wait in the in-memory
    queue behind other tasks before a worker starts it, so `retry > timeout` alone is not enough.
    """
    workers = conf.get("workers") or 4
    queue_limit = conf.get("queue_limit")
    if queue_limit is None:
        queue_limit = workers**2
    return conf["timeout"] * (ceil((queue_limit + 1) / workers) + 1)


def _clusters(q_cluster: dict):
    yield "default", q_cluster
    for name, overrides in (q_cluster.get("ALT_CLUSTERS") or {}).items():
        yield name, {**q_cluster, **overrides}


@register()
def q_cluster_check(app_configs, **kwargs):
    errors = []
    for name, conf in _clusters(getattr(settings, "Q_CLUSTER", {})):
        if not conf.get("orm"):
            errors.append(Error(f"Q_CLUSTER[{name}] has no 'orm' broker", hint="set 'orm': 'default'",
                                id="genhub.E003"))
        if not conf.get("timeout"):
            errors.append(
                Error(f"Q_CLUSTER[{name}] has no 'timeout'", hint="a hung task would hold a worker forever",
                      id="genhub.E001")
            )
            continue
        if queue_limit_unbounded := conf.get("queue_limit") == 0:
            errors.append(
                Error(f"Q_CLUSTER[{name}] queue_limit=0 is unbounded", hint="use 1 or 2", id="genhub.E001")
            )
        bound = redelivery_bound(conf)
        retry = conf.get("retry", 60)
        if not queue_limit_unbounded and retry <= bound:
            errors.append(
                Error(
                    f"Q_CLUSTER[{name}] retry={retry} must exceed {bound} "
                    f"(timeout × (ceil((queue_limit + 1) / workers) + 1))",
                    hint="tasks would be re-delivered while still queued or running",
                    id="genhub.E001",
                )
            )
        if conf.get("catch_up", True):
            errors.append(
                Error(
                    f"Q_CLUSTER[{name}] catch_up must be False",
                    hint="a cluster that was down would replay every missed reconcile tick",
                    id="genhub.E002",
                )
            )
    return errors


@register()
def heartbeat_check(app_configs, **kwargs):
    """A stale threshold within two heartbeats would requeue jobs whose workers are alive (and pay twice)."""
    beat = float(getattr(settings, "GENHUB_HEARTBEAT_SECONDS", 5))
    stale = float(getattr(settings, "GENHUB_STALE_JOB_SECONDS", 4 * beat))
    if stale < 2 * beat:
        return [Error(f"GENHUB_STALE_JOB_SECONDS={stale:g} must be at least twice GENHUB_HEARTBEAT_SECONDS={beat:g}",
                      hint="a job would be taken from a live worker after one late beat", id="genhub.E004")]
    return []
