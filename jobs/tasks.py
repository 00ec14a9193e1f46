"""django-q2 entry points. Each takes ids, imports its service lazily and calls it: no logic here."""

from genhub.queue import task


@task
def pump(provider: str, wait: float = 0.0) -> str:
    from jobs.dispatch import provider_pump

    return provider_pump(provider_name=provider, wait=wait)


@task
def fetch_images(wait: float = 0.0) -> str:
    from jobs.fetching import images_fetch

    return images_fetch(wait=wait)


@task
def run_job(job_id: int, dispatch_token: str) -> str:
    from jobs.worker_run import job_run_dispatched

    return job_run_dispatched(job_id=job_id, dispatch_token=dispatch_token)


@task
def cancel_remote(provider: str, ref: dict) -> None:
    from jobs.dispatch import job_cancel_remote

    job_cancel_remote(provider_name=provider, ref=ref)


@task
def sweep_stale_jobs() -> int:
    from jobs.services import jobs_sweep_stale

    return jobs_sweep_stale()


@task
def pump_all() -> None:
    """Scheduled safety net: restarts a pump for every provider with unfinished work."""
    from jobs.dispatch import pumps_restart
    from jobs.fetching import fetch_restart

    pumps_restart()
    fetch_restart()


@task
def check_alerts() -> list[str]:
    from jobs.alerts import alerts_check

    return alerts_check()


@task
def deliver_alert(alert_id: int) -> bool:
    from jobs.alerts import alert_deliver

    return alert_deliver(alert_id=alert_id)


@task
def resume() -> list[str]:
    """Enqueued when a cluster's worker starts: pick up what a killed cluster left."""
    from jobs.resume import cluster_resume

    return cluster_resume()


@task
def deliver_webhook(delivery_id: int) -> bool:
    from jobs.batch_events import delivery_send

    return delivery_send(delivery_id=delivery_id)


@task
def webhooks_tick() -> tuple[int, int]:
    from jobs.batch_events import webhooks_tick as tick

    return tick()
