"""The batch page of a big batch: a page of cards at a time, filtered by status, in the same few queries."""

import pytest

from jobs import services
from tests.jobs.test_batch_counts import add_jobs
from tests.jobs.test_batch_jobs_api import big_batch

pytestmark = pytest.mark.django_db


def test_the_batch_page_shows_a_page_of_cards_and_filters_by_status(web, user):
    batch = big_batch(user, 120)
    job = batch.jobs.order_by("position")[70]
    services.job_claim(job_id=job.pk)

    first = web.get(f"/batches/{batch.uuid}/").content.decode()
    third = web.get(f"/batches/{batch.uuid}/?page=3").content.decode()
    running = web.get(f"/batches/{batch.uuid}/?status=running").content.decode()

    assert first.count('<li class="card') == 50 and "Page 1 of 3" in first
    assert third.count('<li class="card') == 20 and "Page 3 of 3" in third
    assert running.count('<li class="card') == 1 and f'id="job-{job.uuid}"' in running
    assert "1 running of 120" in running


def test_the_batch_page_reads_no_more_queries_for_a_big_batch(web, user, django_assert_max_num_queries):
    batch = big_batch(user, 10)
    with django_assert_max_num_queries(40) as small:
        web.get(f"/batches/{batch.uuid}/")
    add_jobs(batch, 490)
    with django_assert_max_num_queries(len(small.captured_queries)):
        web.get(f"/batches/{batch.uuid}/")
