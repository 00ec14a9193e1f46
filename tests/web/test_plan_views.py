"""The new-batch page's deadline and webhook fields, and the batch page's deadline form."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import BatchRun
from tests.jobs.factories import make_batch
from tests.web.helpers import errors_next_to, form_data

pytestmark = pytest.mark.django_db
NEW = "/batches/new/"


def test_a_deadline_and_a_webhook_reach_the_new_batch_and_the_secret_is_shown_once(web, settings):
    settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS = True  # no name resolution in the test
    due = (timezone.now() + timedelta(hours=5)).replace(microsecond=0)
    response = web.post(NEW, form_data(provider="vastai", deadline=due.isoformat(),
                                       webhook_url="https://hooks.example.com/genhub", webhook_events="batch,job"),
                        follow=True)
    batch = BatchRun.objects.get()
    assert (batch.deadline, batch.webhook_url, batch.webhook_events) == (due, "https://hooks.example.com/genhub",
                                                                         "batch,job")
    assert batch.webhook_secret in response.content.decode()  # on the page it lands on, this once
    assert batch.webhook_secret not in web.get(f"/batches/{batch.uuid}/").content.decode()


def test_a_bad_deadline_or_webhook_is_shown_next_to_its_field_and_nothing_is_created(web, settings):
    settings.GENHUB_WEBHOOK_ALLOW_HTTP = False
    response = web.post(NEW, form_data(provider="vastai", deadline="next week", webhook_url="http://a.example/h"))
    assert response.status_code == 400
    assert "ISO 8601" in errors_next_to(response, "deadline")
    assert "https://" in errors_next_to(response, "webhook_url")
    assert not BatchRun.objects.exists()


def test_the_batch_page_changes_and_removes_the_deadline(web, user):
    batch = make_batch(user, provider="vastai")
    due = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    url = f"/batches/{batch.uuid}/deadline/"
    assert web.post(url, {"deadline": due.isoformat()}).status_code == 302
    assert BatchRun.objects.get().deadline == due

    bad = web.post(url, {"deadline": (timezone.now() - timedelta(hours=1)).isoformat()})
    assert bad.status_code == 400 and "must be in the future" in errors_next_to(bad, "deadline")
    assert BatchRun.objects.get().deadline == due

    assert web.post(url, {"action": "remove"}).status_code == 302
    assert BatchRun.objects.get().deadline is None
