"""Spend control in the web pages: the new batch's budget and fallback, the dry run's cap warnings, the
batch page's costs, budget form, paused and moved jobs, the batches list, alerts, and the GPU's cost."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from genhub.context_processors import alerts as alerts_context
from gpu_instances.models import GpuInstance
from jobs import selectors
from jobs.models import Alert, BatchRun, Job
from tests.jobs.factories import make_batch
from tests.web.helpers import errors_next_to, finish_job, form_data, shown_text, text_of

pytestmark = pytest.mark.django_db
S = Job.Status
NEW = "/batches/new/"



def section(page: str, element_id: str) -> str:
    """The shown text of the element with this id (up to its first closing tag of the same name)."""
    match = re.search(rf'<(section|div|li|p)\b[^>]*\bid="{re.escape(element_id)}"[^>]*>.*?</\1>', page, re.S)
    assert match, f"no element #{element_id} on the page"
    return shown_text(match.group(0))


def card(page: str, job: Job) -> str:
    match = re.search(rf'<li class="card[^"]*" id="job-{job.uuid}".*?</li>', page, re.S)
    assert match, f"no card for {job}"
    return match.group(0)


def paused(job: Job, reason="batch budget $0.10 reached (this clip ≈ $0.04); raise the batch budget to resume"):
    Job.objects.filter(pk=job.pk).update(status=S.PAUSED, paused_reason=reason)


# --- new batch: spending -----------------------------------------------------------------------


def test_the_new_batch_form_has_a_labelled_spending_section_that_says_fallback_is_for_vast_only(web):
    page = web.get(NEW).content.decode()

    spending = text_of(page.split('id="step-spending"')[1].split("</section>")[0])
    assert "4. Spending" in spending and "Budget (USD)" in spending
    assert "Fall back to fal.ai (vast.ai GPU batches only)" in spending
    for choice in ("Never: the jobs wait for the GPU", "unavailable for N minutes", "failed K times on the GPU"):
        assert choice in spending
    assert "Minutes: 1–1440; failed attempts: 1–10" in spending
    for control in ("id_budget_usd", "id_fallback_0", "id_fallback_1", "id_fallback_2", "id_fallback_after"):
        assert f'for="{control}"' in page, control
    assert re.search(r'<input type="radio" name="fallback" value="never"[^>]*checked', page)


def test_the_budget_and_fallback_policy_reach_the_new_batch(web):
    web.post(NEW, form_data(provider="vastai", budget_usd="12.5", fallback="attempts", fallback_after="2"))

    batch = BatchRun.objects.get()
    assert (batch.budget_usd, batch.fallback_policy, batch.fallback_after) == (Decimal("12.50"), "attempts", 2)


def test_a_batch_made_without_spending_choices_has_no_budget_and_never_falls_back(web):
    web.post(NEW, form_data(budget_usd="", fallback_after="7"))

    batch = BatchRun.objects.get()
    assert (batch.budget_usd, batch.fallback_policy, batch.fallback_after) == (None, "never", None)


@pytest.mark.parametrize(("fields", "anchor", "fragment"), [
    ({"budget_usd": "lots"}, "budget_usd", "must be an amount in USD, at least 0 (e.g. 25 or 12.50)"),
    ({"budget_usd": "-5"}, "budget_usd", "must be an amount in USD, at least 0"),
    ({"provider": "vastai", "fallback": "sometimes"}, "fallback", "must be one of never, unrecoverable, attempts"),
    ({"provider": "fal", "fallback": "attempts", "fallback_after": "2"}, "fallback",
     "only a vastai batch can fall back (to fal)"),
    ({"provider": "vastai", "fallback": "attempts"}, "fallback_after",
     "with fallback=attempts, give the number of attempts (1–10)"),
    ({"provider": "vastai", "fallback": "unrecoverable", "fallback_after": "5000"}, "fallback_after",
     "with fallback=unrecoverable, give the number of minutes (1–1440)"),
])
def test_it_shows_a_spending_error_next_to_its_field_and_creates_nothing(web, fields, anchor, fragment):
    response = web.post(NEW, form_data(**fields))

    assert response.status_code == 400
    assert fragment in errors_next_to(response, anchor)
    page = response.content.decode()
    assert f'href="#field-{anchor}"' in page  # listed in the summary, linked to the field
    assert re.search(rf'<(div|fieldset) class="field[^"]*has-error[^"]*" id="field-{anchor}"', page)
    control = "id_fallback_0" if anchor == "fallback" else f"id_{anchor}"
    assert 'aria-invalid="true"' in re.search(rf'<input[^>]*id="{control}"[^>]*>', page).group(0)
    assert BatchRun.objects.count() == 0


def test_the_dry_run_warns_prominently_when_the_estimate_is_over_the_batch_budget(web):
    # Two 17-frame 480p clips on fal: 2 × $0.0425 = $0.0850, over a $0.05 budget.
    response = web.post(NEW, form_data(action="estimate", budget_usd="0.05"))

    page = response.content.decode()
    warning = re.search(r'<div class="warning-box" role="alert">(.*?)</div>', page, re.S)
    assert warning, "the cap warning is not in an alert box"
    assert "over this batch's budget ($0.05): about 1 of 2 clips will run" in text_of(warning.group(1))
    assert page.index('class="warning-box"') < page.index('class="estimates"')  # read before the table
    assert "Budget for this batch: $0.05 ." in text_of(page)
    assert BatchRun.objects.count() == 0


def test_the_dry_run_warns_when_the_estimate_is_over_what_is_left_of_the_monthly_budget(web, settings):
    settings.GENHUB_MONTHLY_BUDGET_USD = Decimal("0.05")

    page = text_of(web.post(NEW, form_data(action="estimate")).content.decode())

    assert "over what is left of the monthly budget ($0.05 of $0.05): about 1 of 2 clips" in page


def test_the_dry_run_has_no_warning_when_the_budget_covers_the_estimate_and_says_the_policy(web):
    response = web.post(NEW, form_data(action="estimate", provider="vastai", budget_usd="10", fallback="unrecoverable",
                                       fallback_after="15"))

    page = response.content.decode()
    assert "warning-box" not in page
    assert ("Budget for this batch: $10.00 ; if the GPU lets it down, waiting jobs move to fal.ai when the GPU has "
            "been unavailable for 15 min.") in text_of(page)


# --- batch page: costs ---------------------------------------------------------------------------


def test_a_gpu_batch_shows_its_cost_what_fal_would_have_cost_and_the_saving(web, user):
    batch = make_batch(user, provider="vastai", count=2, params={"num_frames": 81, "resolution": "480p"})
    for job in batch.jobs.all():
        finish_job(job, cost="0.0300")

    costs = section(web.get(f"/batches/{batch.uuid}/").content.decode(), "batch-costs")

    assert "Finished clips cost $0.0600" in costs
    assert "The same clips on fal.ai about $0.4050 ( fal's price per video-second )" in costs
    assert "Choosing vast.ai GPU over fal.ai saved $0.3450" in costs


def test_a_fal_batch_that_would_have_been_cheaper_on_the_gpu_says_what_it_cost_more(web, user):
    batch = make_batch(user, count=2)
    for job in batch.jobs.all():
        finish_job(job, cost="0.0425")
    comparison = selectors.batch_cost_comparison(selectors.batch_get(user=user, batch_uuid=batch.uuid))
    assert comparison.saving < 0

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    costs = section(page, "batch-costs")
    assert f"Choosing fal.ai over vast.ai GPU cost ${-comparison.saving:.4f} more" in costs
    assert f"The same clips on vast.ai GPU about ${comparison.other_estimate:.4f} ( {comparison.basis} )" in costs
    assert 'class="saving saving-negative"' in page


def test_before_any_clip_finishes_the_comparison_says_so(web, user):
    batch = make_batch(user)

    costs = shown_text(re.search(r'<dl class="facts-grid cost-facts">.*?</dl>',
                                 web.get(f"/batches/{batch.uuid}/").content.decode(), re.S).group(0))

    assert "no finished clips yet" in costs and "saved" not in costs and "more" not in costs


# --- batch page: the budget form -----------------------------------------------------------------


def test_the_batch_page_shows_the_budget_and_what_is_spent_of_it(web, user):
    batch = make_batch(user, count=2, budget_usd="0.10")
    finish_job(batch.jobs.first(), cost="0.0425")

    costs = section(web.get(f"/batches/{batch.uuid}/").content.decode(), "batch-costs")

    assert "Budget $0.10 , of which $0.0425 is spent." in costs
    assert "New budget (USD)" in costs and "Change the budget" in costs and "Remove the budget" in costs


def test_a_batch_without_a_budget_offers_to_set_one(web, user):
    costs = section(web.get(f"/batches/{make_batch(user).uuid}/").content.decode(), "batch-costs")

    assert "No budget: every job runs." in costs and "Set a budget" in costs and "Remove the budget" not in costs


def test_raising_the_budget_saves_it_and_says_the_paused_jobs_start_again(web, user):
    batch = make_batch(user, count=3, budget_usd="0.05")
    for job in batch.jobs.all()[1:]:
        paused(job)

    response = web.post(f"/batches/{batch.uuid}/budget/", {"budget_usd": "2.5"})

    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.uuid}/#batch-costs"
    batch.refresh_from_db()
    assert batch.budget_usd == Decimal("2.50")
    page = text_of(web.get(response["Location"]).content.decode())
    assert "Budget set to $2.50. 2 paused jobs start again as far as it allows." in page


def test_lowering_the_budget_does_not_promise_that_paused_jobs_start(web, user):
    batch = make_batch(user, count=2, budget_usd="0.05")
    paused(batch.jobs.last())

    page = web.post(f"/batches/{batch.uuid}/budget/", {"budget_usd": "0.01"}, follow=True).content.decode()

    assert re.findall(r'<p class="message[^"]*">(.*?)</p>', page) == ["Budget set to $0.01."]
    assert BatchRun.objects.get().budget_usd == Decimal("0.01")


def test_removing_the_budget_leaves_the_batch_without_one_and_its_paused_jobs_start(web, user):
    batch = make_batch(user, count=2, budget_usd="0.05")
    paused(batch.jobs.last())

    response = web.post(f"/batches/{batch.uuid}/budget/", {"budget_usd": "0.05", "action": "remove"}, follow=True)

    batch.refresh_from_db()
    assert batch.budget_usd is None
    assert "Budget removed: this batch has no budget now. Its 1 paused job starts again." in text_of(
        response.content.decode())


@pytest.mark.parametrize(("amount", "message"), [
    ("plenty", "must be an amount in USD, at least 0 (e.g. 25 or 12.50)"),
    ("-1", "must be an amount in USD, at least 0"),
    ("1e12", "must be an amount in USD, at least 0"),
    ("", "enter an amount in USD (e.g. 25 or 12.50), or remove the budget"),
])
def test_a_bad_budget_is_shown_next_to_the_budget_field_and_changes_nothing(web, user, amount, message):
    batch = make_batch(user, budget_usd="1.00")

    response = web.post(f"/batches/{batch.uuid}/budget/", {"budget_usd": amount})

    assert response.status_code == 400
    assert message in errors_next_to(response, "budget_usd")
    page = response.content.decode()
    budget_input = re.search(r'<input[^>]*id="id_budget_usd"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in budget_input and "autofocus" in budget_input  # taken to the problem
    assert "The budget was not changed: see the problem next to the budget field." in text_of(page)
    assert f'value="{amount}"' in page or not amount  # what was typed stays, to be corrected
    batch.refresh_from_db()
    assert batch.budget_usd == Decimal("1.00")


def test_nobody_changes_another_users_budget_and_only_by_post(web, user, other_user):
    theirs = make_batch(other_user, budget_usd="1.00")
    mine = make_batch(user)

    assert web.post(f"/batches/{theirs.uuid}/budget/", {"budget_usd": "99"}).status_code == 404
    assert web.get(f"/batches/{mine.uuid}/budget/").status_code == 405
    assert BatchRun.objects.get(pk=theirs.pk).budget_usd == Decimal("1.00")


# --- batch page: paused and moved jobs -----------------------------------------------------------


def test_a_paused_job_card_says_paused_and_why(web, user):
    batch = make_batch(user, count=2, budget_usd="0.05")
    first, second = batch.jobs.all()
    finish_job(first, cost="0.0425")
    paused(second)

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    shown = shown_text(card(page, second))
    assert "Paused" in shown
    assert "Why it is paused: batch budget $0.10 reached (this clip ≈ $0.04); raise the batch budget to resume" in shown
    assert "0%" not in shown  # no progress bar for a job that is waiting on purpose
    assert "Why it is paused" not in shown_text(card(page, first))
    assert 'class="card status-paused"' in page
    summary = shown_text(re.search(r'<section id="batch-summary".*?</section>', page, re.S).group(0))
    assert "Paused" in summary and "1 paused" in summary and "Some jobs are paused" in summary


def test_a_job_moved_to_fal_shows_the_badge_and_the_reason(web, user):
    batch = make_batch(user, provider="vastai", count=2, fallback="attempts", fallback_after=2)
    moved, stayed = batch.jobs.all()
    Job.objects.filter(pk=moved.pk).update(provider="fal", fallback_from="vastai",
                                           fallback_reason="failed on the GPU 2 times; moved to fal")

    page = web.get(f"/batches/{batch.uuid}/").content.decode()

    assert "moved to fal.ai failed on the GPU 2 times; moved to fal" in shown_text(card(page, moved))
    assert "moved to fal.ai" not in shown_text(card(page, stayed))
    assert "If the GPU lets the batch down, a job moves to fal.ai after 2 failed attempts on the GPU." in text_of(
        section(page, "batch-costs"))


def test_the_live_script_knows_the_paused_label(web, user):
    page = web.get(f"/batches/{make_batch(user).uuid}/").content.decode()

    assert '"paused": "Paused"' in re.search(r'<script id="batch-live-config"[^>]*>(.*?)</script>', page, re.S).group(1)


# --- batches list -----------------------------------------------------------------------------------


def test_the_list_shows_a_paused_batch_its_paused_count_and_its_budget(web, user):
    batch = make_batch(user, name="capped", count=3, budget_usd="0.05")
    jobs = list(batch.jobs.all())
    finish_job(jobs[0], cost="0.0425")
    paused(jobs[1])
    paused(jobs[2])

    row = text_of(re.search(r"<tbody>(.*?)</tbody>", web.get("/").content.decode(), re.S).group(1))

    assert "capped Paused" in row
    assert "1 succeeded" in row and "2 paused" in row
    assert "$0.0425 of $0.05 budget" in row


# --- alerts -------------------------------------------------------------------------------------------


def alert(key, kind=Alert.Kind.BUDGET_REACHED, message="a budget ran out", batch=None, **fields):
    return Alert.objects.create(key=key, kind=kind, message=message, batch=batch, **fields)


def banner(response) -> str:
    match = re.search(r'<section class="alerts" aria-labelledby="alerts-title">(.*?)</section>',
                      response.content.decode(), re.S)
    return match.group(1) if match else ""


def test_open_alerts_show_on_every_page_with_a_link_to_their_batch(web, user):
    batch = make_batch(user, name="orbit")
    alert("batch:1:budget_100", message="batch “orbit”: $0.10 spent of $0.10; new work is paused", batch=batch)
    alert("instance_down", kind=Alert.Kind.INSTANCE_DOWN, message="no GPU instance has been ready for 20 min")

    for path in ("/", NEW, "/instance/"):
        shown = banner(web.get(path))
        assert "Budget reached: batch “orbit”: $0.10 spent of $0.10; new work is paused" in text_of(shown), path
        assert "GPU unavailable: no GPU instance has been ready for 20 min" in text_of(shown), path
        assert f'href="/batches/{batch.uuid}/"' in shown
        assert shown.count("Open the batch") == 1  # the genhub-wide alert has no batch to open


def test_the_banner_leaves_out_resolved_alerts_and_other_users_batches(web, user, other_user):
    alert("batch:1:budget_100", batch=make_batch(other_user), message="their budget")
    alert("batch:2:stalled", batch=make_batch(user), message="old news", resolved_at=timezone.now())

    assert banner(web.get("/")) == ""


def test_staff_see_every_batchs_alerts(client, other_user, admin_user):
    alert("batch:1:budget_100", batch=make_batch(other_user), message="their budget")
    client.force_login(admin_user)

    assert "their budget" in banner(client.get("/"))


def test_the_alerts_for_a_page_cost_one_query_and_none_when_logged_out(user, other_user, django_assert_num_queries):
    for number in range(3):
        alert(f"batch:{number}:stalled", kind=Alert.Kind.BATCH_STALLED, batch=make_batch(user, name=f"b{number}"))
    request = RequestFactory().get("/")
    request.user = user

    with django_assert_num_queries(1):
        shown = [(a.message, a.batch.name) for a in alerts_context(request)["open_alerts"]]

    assert len(shown) == 3
    request.user = AnonymousUser()
    with django_assert_num_queries(0):
        assert list(alerts_context(request)["open_alerts"]) == []


def test_the_batch_page_shows_its_own_alerts_in_place_and_the_others_in_the_banner(web, user):
    batch, other = make_batch(user, name="this one"), make_batch(user, name="that one")
    alert("batch:1:budget_80", kind=Alert.Kind.BUDGET_WARNING, message="batch “this one”: $0.08 spent of $0.10 (80 %)",
          batch=batch)
    alert("batch:2:stalled", kind=Alert.Kind.BATCH_STALLED, message="batch “that one” has made no progress",
          batch=other)

    response = web.get(f"/batches/{batch.uuid}/")

    in_page = re.search(r'<section class="alerts in-page"[^>]*>(.*?)</section>', response.content.decode(), re.S)
    assert "Budget nearly spent: batch “this one”: $0.08 spent of $0.10 (80 %)" in text_of(in_page.group(1))
    assert "Open the batch" not in in_page.group(1)  # it is this page
    assert "this one" not in banner(response) and "that one" in banner(response)


def test_the_login_page_shows_no_alerts(client, user):
    alert("instance_down", kind=Alert.Kind.INSTANCE_DOWN, message="no GPU")

    assert banner(client.get("/accounts/login/")) == ""


# --- GPU instance panel ------------------------------------------------------------------------------


def test_the_instance_panel_shows_cost_so_far_used_by_jobs_and_overhead(web, user):
    now = timezone.now()
    active = GpuInstance.objects.create(vast_id=7, label="genhub", gpu_name="H100 SXM", dph_usd=Decimal("2.0000"),
                                        state=GpuInstance.State.READY)
    earlier = GpuInstance.objects.create(vast_id=6, label="genhub", gpu_name="A100", dph_usd=Decimal("1.0000"),
                                         state=GpuInstance.State.DESTROYED, end_reason="operator destroyed it")
    GpuInstance.objects.filter(pk=active.pk).update(created_at=now - timedelta(hours=1))
    GpuInstance.objects.filter(pk=earlier.pk).update(created_at=now - timedelta(hours=5),
                                                     destroyed_at=now - timedelta(hours=3))
    first, second = make_batch(user, provider="vastai", count=2).jobs.all()
    Job.objects.filter(pk=first.pk).update(instance=active, cost_usd=Decimal("0.5000"))
    Job.objects.filter(pk=second.pk).update(instance=earlier, cost_usd=Decimal("0.2500"))

    page = text_of(web.get("/instance/").content.decode())

    now_part, history = page.split("Earlier instances")
    assert re.search(r"Cost so far \$2\.00\d\d Used by jobs \$0\.5000 Overhead \(boot and idle\) \$1\.50\d\d", now_part)
    assert "cost $2.0000: $0.2500 used by jobs, $1.7500 overhead" in history


def test_a_gpu_batch_without_a_fallback_says_its_jobs_wait_for_the_gpu(web, user):
    costs = section(web.get(f"/batches/{make_batch(user, provider='vastai').uuid}/").content.decode(), "batch-costs")

    assert "If the GPU lets the batch down, the jobs wait for it (they never move to fal.ai)." in costs


@pytest.mark.parametrize("page", ["list", "batch"])
def test_each_page_reads_the_alerts_once(web, user, page):
    batch = make_batch(user)
    alert("batch:1:stalled", kind=Alert.Kind.BATCH_STALLED, batch=batch)
    alert("instance_down", kind=Alert.Kind.INSTANCE_DOWN)

    with CaptureQueriesContext(connection) as queries:
        web.get("/" if page == "list" else f"/batches/{batch.uuid}/")

    assert sum('FROM "jobs_alert"' in query["sql"] for query in queries.captured_queries) == 1
