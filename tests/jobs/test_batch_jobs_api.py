"""Big batches through the API: the batch without its whole job list, jobs a page at a time and by status,
only what changed since the last poll, and a batch list that never adds up jobs."""

import threading

import pytest
from django.db import connections

from jobs import services
from jobs.models import Job
from tests.jobs.factories import make_batch
from tests.jobs.test_batch_counts import add_jobs

pytestmark = pytest.mark.django_db
S = Job.Status


def big_batch(user, n: int, **kwargs):
    batch = make_batch(user, count=1, **kwargs)
    add_jobs(batch, n - 1)
    return batch


def test_the_batch_comes_with_its_counts_and_only_a_first_page_of_jobs(api, user):
    batch = big_batch(user, 120)

    body = api.get(f"/api/batches/{batch.uuid}/").json()

    assert body["total"] == 120 and body["counts"]["queued"] == 120
    assert len(body["jobs"]) == 50 and body["jobs"][0]["input_name"] == "img0.png"
    assert body["jobs_page"]["count"] == 120 and body["jobs_page"]["next"].endswith(
        f"/api/batches/{batch.uuid}/jobs/?page=2")
    assert body["jobs_url"].endswith(f"/api/batches/{batch.uuid}/jobs/") and body["cursor"].count(":") == 2


def test_jobs_come_a_page_at_a_time_in_order_and_filtered_by_status(api, user):
    batch = big_batch(user, 30)
    failed = list(batch.jobs.order_by("position")[5:8])
    for job in failed:
        services.job_claim(job_id=job.pk)
        services.job_fail(job_id=job.pk, code="x", message="no", permanent=True)

    page2 = api.get(f"/api/batches/{batch.uuid}/jobs/?page=2&page_size=10").json()
    only_failed = api.get(f"/api/batches/{batch.uuid}/jobs/?status=failed").json()

    assert page2["count"] == 30 and [j["input_name"] for j in page2["results"]][:2] == ["copy9.png", "copy10.png"]
    assert page2["next"] and page2["previous"]
    assert only_failed["count"] == 3 and {j["id"] for j in only_failed["results"]} == {str(j.uuid) for j in failed}


@pytest.mark.parametrize("query, field", [("status=done", "status"), ("page_size=100000", "page_size"),
                                          ("since=-1", "since"), ("since=1:2:x", "since")])
def test_a_bad_jobs_query_is_a_400_naming_the_parameter(api, user, query, field):
    batch = big_batch(user, 2)

    response = api.get(f"/api/batches/{batch.uuid}/jobs/?{query}")

    assert response.status_code == 400 and field in response.json()["errors"]


def test_someone_elses_batch_jobs_are_not_found(api, other_user):
    batch = big_batch(other_user, 2)
    assert api.get(f"/api/batches/{batch.uuid}/jobs/").status_code == 404
    assert api.get(f"/api/batches/{batch.uuid}/jobs/?since=0").status_code == 404


# The cursor is about committed transactions: these tests commit, as the web and the pumps do.
@pytest.mark.django_db(transaction=True)
def test_a_poll_sends_the_counts_and_only_the_jobs_that_changed(api, user):
    batch = big_batch(user, 40)
    cursor = api.get(f"/api/batches/{batch.uuid}/").json()["cursor"]
    first, second = batch.jobs.order_by("position")[:2]
    services.job_claim(job_id=first.pk)
    services.job_claim(job_id=second.pk)
    services.job_heartbeat(job_ids=[second.pk])  # beats alone are not a change a card shows

    poll = api.get(f"/api/batches/{batch.uuid}/jobs/?since={cursor}").json()

    assert {j["id"] for j in poll["results"]} == {str(first.uuid), str(second.uuid)}
    assert poll["batch"]["counts"]["running"] == 2 and poll["batch"]["counts"]["queued"] == 38
    assert poll["resync"] is False
    services.job_succeed(job_id=first.pk)
    again = api.get(f"/api/batches/{batch.uuid}/jobs/?since={poll['cursor']}").json()
    assert [j["id"] for j in again["results"]] == [str(first.uuid)] and again["results"][0]["status"] == "succeeded"
    quiet = api.get(f"/api/batches/{batch.uuid}/jobs/?since={again['cursor']}").json()
    assert quiet["results"] == []


@pytest.mark.django_db(transaction=True)
def test_a_poll_with_too_many_changes_asks_the_client_to_read_the_pages_again(api, user, monkeypatch):
    from jobs import selectors

    monkeypatch.setattr(selectors, "CHANGES_LIMIT", 5)
    batch = big_batch(user, 12)
    cursor = api.get(f"/api/batches/{batch.uuid}/").json()["cursor"]
    services.batch_cancel(batch=batch)

    poll = api.get(f"/api/batches/{batch.uuid}/jobs/?since={cursor}").json()

    assert poll["resync"] is True and poll["results"] == [] and poll["batch"]["counts"]["cancelled"] == 12


@pytest.mark.django_db(transaction=True)
def test_a_change_that_commits_after_a_later_one_is_not_missed_by_the_poll(api, user):
    """Transaction A changes job 1 first but commits last; B changes job 2 and commits at once. A poll in
    between sees job 2; the next poll (from the cursor it got) must still bring job 1.

    A moves a running job's progress (no count changes, so it holds no lock B would wait for)."""
    batch = big_batch(user, 3)
    job1, job2, _ = batch.jobs.order_by("position")
    services.job_claim(job_id=job1.pk)
    cursor = api.get(f"/api/batches/{batch.uuid}/").json()["cursor"]
    a_wrote, a_may_commit = threading.Event(), threading.Event()

    def transaction_a():
        with connections["default"].cursor():  # this thread's own connection
            from django.db import transaction

            with transaction.atomic():
                services.job_heartbeat(job_ids=[job1.pk], progress=0.5)
                a_wrote.set()
                a_may_commit.wait(10)
        connections["default"].close()

    thread = threading.Thread(target=transaction_a)
    thread.start()
    try:
        assert a_wrote.wait(10)
        Job.objects.filter(pk=job2.pk).update(status=S.CANCELLED)  # B, committed at once (autocommit)
        between = api.get(f"/api/batches/{batch.uuid}/jobs/?since={cursor}").json()
        assert [j["id"] for j in between["results"]] == [str(job2.uuid)]
    finally:
        a_may_commit.set()
        thread.join()

    after = api.get(f"/api/batches/{batch.uuid}/jobs/?since={between['cursor']}").json()

    assert [(j["id"], j["progress"]) for j in after["results"]] == [(str(job1.uuid), 0.5)]


def test_the_batch_list_costs_the_same_queries_with_ten_or_a_thousand_jobs(api, user, django_assert_max_num_queries):
    small = big_batch(user, 10)
    with django_assert_max_num_queries(8) as small_queries:
        assert api.get("/api/batches/").status_code == 200
    add_jobs(small, 990)
    for _ in range(3):
        big_batch(user, 5)
    with django_assert_max_num_queries(len(small_queries.captured_queries)) as big_queries:
        body = api.get("/api/batches/").json()
    assert body["results"][-1]["total"] == 1000
    assert not any("jobs_job" in q["sql"] for q in big_queries.captured_queries), "the list must not read jobs"


def _counted_jobs(queries) -> list[str]:
    """Queries that count jobs, but for the cost comparison's, which groups the finished ones by their
    parameters (none finished here) to price them on the other provider."""
    return [q["sql"] for q in queries
            if "COUNT(" in q["sql"] and '"jobs_job"' in q["sql"] and "GROUP BY" not in q["sql"]]


def test_the_batch_its_page_and_its_polls_count_none_of_its_jobs(api, user, django_assert_max_num_queries):
    """Counts, ETA, deadline moves and the jobs ahead come from the maintained BatchCounts: a 10,000-job
    batch is read in the same queries as a small one, and none of them counts jobs."""
    older = big_batch(user, 20)  # ahead of it on fal
    batch = big_batch(user, 60)
    services.job_claim(job_id=batch.jobs.order_by("position").first().pk)
    cursor = api.get(f"/api/batches/{batch.uuid}/").json()["cursor"]
    services.job_claim(job_id=batch.jobs.order_by("position")[1].pk)
    reads = {"page": f"/batches/{batch.uuid}/", "api": f"/api/batches/{batch.uuid}/",
             "poll": f"/api/batches/{batch.uuid}/jobs/?since={cursor}"}

    small = {}
    for name, url in reads.items():
        with django_assert_max_num_queries(20) as captured:
            assert api.get(url).status_code == 200
        assert _counted_jobs(captured.captured_queries) == [], name
        small[name] = len(captured.captured_queries)
    add_jobs(batch, 500)
    add_jobs(older, 500)
    for name, url in reads.items():
        with django_assert_max_num_queries(small[name]) as captured:
            body = api.get(url)
        assert _counted_jobs(captured.captured_queries) == [], name
    assert body.json()["batch"]["eta"]["basis"].startswith("560 clip(s) on fal")  # its own, queued and running
