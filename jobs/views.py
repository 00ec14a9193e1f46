"""The web pages for batches and jobs.

Thin on purpose: they parse the request, call the same intake, services and selectors as the JSON
API, and render. Live updates on the batch page come from the API itself (`static/genhub/batch.js`).
"""

import mimetypes
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST, require_safe

from genhub.formatting import plural
from gpu_instances import exposure
from jobs import estimates, exports, selectors, services
from jobs import params as gen_params
from jobs.downloads import serve_stored
from jobs.eta import batch_eta
from jobs.forms import BatchForm, BudgetForm, DeadlineForm, batch_spec_from_upload, errors_by_anchor
from jobs.intake import BatchValidationError, UploadedFile
from jobs.models import BatchRun, Job, Provider
from jobs.upload_limits import BODY_LIMIT_ERRORS, body_limit_error, upload_errors

BATCHES_PER_PAGE = 20
# A 10,000-job batch is shown a page of cards at a time (and filtered by status); batch.js keeps the
# shown cards and the counts live from `GET /api/batches/{id}/jobs/?since=`.
JOBS_PER_PAGE = 50
PREVIEW_ROWS = 200  # the dry run lists this many items; the counts and estimates cover all of them
# Every job status reads as the model names it; a status added later gets a label without a change here.
STATUS_LABELS = {status.value: status.label.capitalize() for status in Job.Status} | {
    "waiting_for_gpu": "Waiting for GPU", "completed_with_failures": "Finished with failures",
    selectors.NEXT_ON_GPU: "Next on the GPU"}
FINISHED_BATCH_STATUSES = ("succeeded", "failed", "cancelled", "completed_with_failures")
# Error anchors that stand for more than one input (the rows come as a file or pasted).
ANCHOR_CONTROLS = {"rows": ("rows_file", "rows_text")}


def _verb(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _lower_first(label: str) -> str:
    return label[:1].lower() + label[1:]  # "Waiting for GPU" → "waiting for GPU", inside a sentence


def fallback_text(policy: str, after: int | None) -> str:
    """A batch's fallback policy in words, after "If the GPU lets the batch down," (dry run, batch page)."""
    if policy == BatchRun.Fallback.UNRECOVERABLE:
        return f"waiting jobs move to fal.ai when the GPU has been unavailable for {after} min"
    if policy == BatchRun.Fallback.ATTEMPTS:
        return f"a job moves to fal.ai after {after} failed attempt{'s' if after != 1 else ''} on the GPU"
    return "the jobs wait for it (they never move to fal.ai)"


def saving_text(saving) -> str:
    """What choosing this provider saved. batch.js says it the same way when the figures change."""
    if saving > 0:
        return f"saved ${saving:.4f}"
    if saving < 0:
        return f"cost ${-saving:.4f} more"
    return "cost the same"


def _chip_counts(batch, counts: dict, next_on_gpu: int | None) -> list[dict]:
    """Every count the batch can have; the page shows a chip only while it counts something ("0 queued"
    on a finished batch is noise). A fal batch has no GPU to wait for; on a GPU batch's own page, jobs
    queued inside SwarmUI are counted apart from the one generating (batch.js does the same live)."""
    chip_counts = dict(counts)
    names = [name for name in Job.Status.values
             if not (name == Job.Status.WAITING_FOR_GPU and batch.provider == Provider.FAL)]
    if next_on_gpu is not None and batch.provider == Provider.VASTAI:
        chip_counts[selectors.NEXT_ON_GPU] = next_on_gpu
        chip_counts[Job.Status.RUNNING] -= next_on_gpu
        names.insert(names.index(Job.Status.RUNNING) + 1, selectors.NEXT_ON_GPU)
    return [{"status": name, "label": _lower_first(STATUS_LABELS[name]), "n": chip_counts[name]} for name in names]


def _batch_summary(batch, *, running: float = 0.0, next_on_gpu: int | None = None) -> dict:
    counts = selectors.batch_counts(batch)
    status = selectors.batch_status(batch)
    return {
        "batch": batch, "status": status, "status_label": STATUS_LABELS.get(status, status),
        "finished": status in FINISHED_BATCH_STATUSES, "counts": _chip_counts(batch, counts, next_on_gpu),
        "active": sum(counts[name] for name in Job.UNFINISHED), "n_failed": counts[Job.Status.FAILED],
        "n_succeeded": counts[Job.Status.SUCCEEDED],
        "progress": selectors.batch_progress(batch, running), "cost": selectors.batch_cost(batch),
        "wasted": selectors.batch_waste(batch),
        "provider_label": Provider(batch.provider).label, "n_paused": counts[Job.Status.PAUSED],
    }


@login_required
def batch_list(request):
    page = Paginator(selectors.batch_list(user=request.user), BATCHES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "batches/list.html", {"page": page, "rows": [_batch_summary(batch) for batch in page]})


def _files_were_sent(request) -> bool:
    try:
        return bool(request.FILES.getlist("images")) or bool(upload_errors(request))
    except BODY_LIMIT_ERRORS:
        return True


def _new_batch_page(request, form, *, errors=(), dry_run=None, status=200):
    grouped = errors_by_anchor(list(errors))
    for anchor in grouped:
        for name in ANCHOR_CONTROLS.get(anchor, (anchor,)):
            if name in form.fields:
                form.fields[name].widget.attrs["aria-invalid"] = "true"
    return render(request, "batches/new.html", {
        "form": form, "errors": grouped, "error_count": len(errors), "dry_run": dry_run,
        "files_were_sent": _files_were_sent(request),
        "limits": {"items": settings.GENHUB_MAX_BATCH_ITEMS,
                   "image_mb": settings.GENHUB_MAX_IMAGE_BYTES // (1024 * 1024)},
        "defaults": {"presets": gen_params.PRESETS, "providers": gen_params.PROVIDER_DEFAULTS},
    }, status=status)


@login_required
def batch_new(request):
    """GET: the form. POST with action=estimate: the dry run (nothing is created). POST: create."""
    if request.method != "POST":
        return _new_batch_page(request, BatchForm())
    try:
        form = BatchForm(request.POST, request.FILES)
    except BODY_LIMIT_ERRORS as exc:  # Django's own limits on the body, met while parsing it
        return _new_batch_page(request, BatchForm(), errors=[body_limit_error(exc)], status=400)
    refused = upload_errors(request)
    if refused:  # the upload was stopped at a limit: what was parsed is incomplete, say only that
        return _new_batch_page(request, BatchForm(request.POST), errors=refused, status=400)
    fields, errors = form.batch_fields()
    files = [UploadedFile.from_django(upload) for upload in request.FILES.getlist("images")]
    try:
        spec = batch_spec_from_upload(files=files, errors=errors, **fields)
    except BatchValidationError as exc:
        return _new_batch_page(request, form, errors=exc.errors, status=400)

    if request.POST.get("action") == "estimate":
        rows = estimates.preview_rows(spec, fields["rows_text"])
        batch_estimates = estimates.estimate_batch(spec.items)
        return _new_batch_page(request, form, dry_run={
            "items": len(spec.items), "images": len({item.image.name for item in spec.items}),
            "estimates": batch_estimates, "provider": spec.provider,
            "provider_label": Provider(spec.provider).label,
            "cap_warnings": estimates.cap_warnings(spec, batch_estimates), "budget_usd": spec.budget_usd,
            "fallback_text": (fallback_text(spec.fallback_policy, spec.fallback_after)
                              if spec.provider == Provider.VASTAI else None),
            "rows": rows[:PREVIEW_ROWS], "hidden_rows": max(0, len(rows) - PREVIEW_ROWS),
            "deadline_choice": estimates.deadline_choice(spec),
        })

    batch = services.batch_create(owner=request.user, spec=spec)
    messages.success(request, f"Batch created: {plural(len(spec.items), 'job')} on {Provider(spec.provider).label}.")
    if batch.webhook_secret:
        # Shown this once (it signs the webhook's POSTs); genhub never shows it again.
        messages.warning(request, f"Webhook signing secret (copy it now, it is not shown again): "
                                  f"{batch.webhook_secret}")
    url = reverse("web:batch-detail", args=[batch.uuid])
    if request.headers.get("X-Requested-With") == "fetch":
        # The page's script submitted the form; it navigates itself (a redirect would be fetched twice).
        return HttpResponse(status=201, headers={"Location": url})
    return redirect(url)


def _shown_jobs(jobs, user) -> list:
    """The jobs with their messages as `user` may see them: a GPU's address only for staff.
    For display and export only; these objects are never saved."""
    jobs = list(jobs)
    for job in jobs:
        instance = job.instance if job.instance_id else None
        for name in ("error_message", "paused_reason", "fallback_reason"):
            setattr(job, name, exposure.shown(getattr(job, name), user, instance))
    return jobs


# Where a job's card links to: its input, video and poster, its cancel and retry forms.
CARD_ROUTES = {"input": "web:job-input", "video": "job-video", "poster": "job-poster", "cancel": "web:job-cancel",
               "retry": "web:job-retry"}
_ANY_JOB = uuid.UUID(int=0)


def _card_urls(jobs) -> None:
    """Each card's links, as `job.urls`. The routes differ only in the job's UUID: each is reversed once and
    each card's UUID put in (50 cards × 5 reversed URLs were a fifth of the page's rendering time)."""
    patterns = {name: reverse(route, args=[_ANY_JOB]) for name, route in CARD_ROUTES.items()}
    placeholder = str(_ANY_JOB)
    for job in jobs:
        job_uuid = str(job.uuid)
        job.urls = {name: pattern.replace(placeholder, job_uuid) for name, pattern in patterns.items()}


def _status_filter(request) -> str:
    wanted = request.GET.get("status", "")
    return wanted if wanted in Job.Status.values else ""


def _jobs_page(request, batch):
    """One page of the batch's jobs, in order, optionally of one status; the page's links keep the filter."""
    status = _status_filter(request)
    paginator = Paginator(selectors.batch_jobs(batch=batch, status=status or None), JOBS_PER_PAGE)
    # The count is already maintained: no COUNT(*) over the batch's jobs.
    paginator.count = selectors.batch_counts(batch)[status] if status else batch.n_total
    return paginator.get_page(request.GET.get("page")), status


def _batch_page(request, batch, *, budget_form=None, budget_errors=(), deadline_form=None, deadline_errors=(),
                status=200):
    cursor = selectors.change_cursor(batch)  # before the jobs are read: see selectors.change_cursor
    page, status_filter = _jobs_page(request, batch)
    jobs = _shown_jobs(page.object_list, request.user)
    phases = selectors.job_phases(jobs)
    for job in jobs:
        job.phase = phases[job.pk]
        job.status_label = STATUS_LABELS[job.phase]
    _card_urls(jobs)
    costs = selectors.batch_cost_comparison(batch)
    alerts = list(selectors.alerts_open(user=request.user))
    budget_errors = errors_by_anchor(list(budget_errors)).get("budget_usd", [])
    budget_form = budget_form or BudgetForm(initial={"budget_usd": batch.budget_usd})
    if budget_errors:
        # The field is far down the page: take the user to it, and say at the top what happened.
        budget_form.fields["budget_usd"].widget.attrs.update({"aria-invalid": "true", "autofocus": True})
        messages.error(request, "The budget was not changed: see the problem next to the budget field.")
    deadline_errors = errors_by_anchor(list(deadline_errors)).get("deadline", [])
    deadline_form = deadline_form or DeadlineForm(initial={"deadline": batch.deadline.isoformat()
                                                           if batch.deadline else ""})
    if deadline_errors:
        deadline_form.fields["deadline"].widget.attrs.update({"aria-invalid": "true", "autofocus": True})
        messages.error(request, "The deadline was not changed: see the problem next to the deadline field.")
    return render(request, "batches/detail.html", {
        "summary": _batch_summary(batch, running=selectors.batch_running_progress(batch),
                                  next_on_gpu=selectors.batch_next_on_gpu(batch)),
        "batch": batch, "jobs": jobs, "page": page, "status_filter": status_filter, "cursor": cursor,
        "status_filter_label": _lower_first(STATUS_LABELS.get(status_filter, "")),
        "status_filters": [{"status": name, "label": STATUS_LABELS[name], "n": n}
                           for name, n in selectors.batch_counts(batch).items() if n],
        "gpu": selectors.gpu_activity_for(batch),
        "eta": batch_eta(batch), "deadline_form": deadline_form, "deadline_errors": deadline_errors,
        "deadline_moved": selectors.batch_deadline_moved(batch),
        "costs": costs, "saving_text": saving_text(costs.saving),
        "other_provider_label": Provider(costs.other_provider).label,
        "fallback_text": fallback_text(batch.fallback_policy, batch.fallback_after),
        "budget_form": budget_form, "budget_errors": budget_errors,
        # This batch's alerts are shown in the page; the site-wide banner shows the others.
        "batch_alerts": [alert for alert in alerts if alert.batch_id == batch.pk],
        "open_alerts": [alert for alert in alerts if alert.batch_id != batch.pk],
        # What the live-update script needs to know, from the same constants the page was rendered with.
        "live_config": {"labels": STATUS_LABELS, "finished": FINISHED_BATCH_STATUSES, "active": Job.UNFINISHED,
                        "cursor": cursor},
    }, status=status)


@login_required
def batch_detail(request, batch_id):
    return _batch_page(request, selectors.batch_get(user=request.user, batch_uuid=batch_id))


@login_required
@require_POST
def batch_budget(request, batch_id):
    """Sets, raises, lowers or (action=remove) removes the batch's budget; a bad amount is shown next to
    the budget field on the batch page itself, with nothing changed."""
    batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
    form = BudgetForm(request.POST)
    budget, errors = form.budget(provider=batch.provider)
    if errors:
        return _batch_page(request, batch, budget_form=form, budget_errors=errors, status=400)
    paused, before = selectors.batch_counts(batch)[Job.Status.PAUSED], batch.budget_usd
    services.batch_set_budget(batch=batch, budget_usd=budget)
    # Only more room resumes anything (the service re-checks every cap); a lower budget pauses instead.
    if budget is None:
        message = "Budget removed: this batch has no budget now."
        message += f" Its {plural(paused, 'paused job')} {_verb(paused, 'starts', 'start')} again." if paused else ""
    else:
        message = f"Budget set to ${budget}."
        more_room = before is None or budget > before
        message += (f" {plural(paused, 'paused job')} {_verb(paused, 'starts', 'start')} again as far as it "
                    "allows." if paused and more_room else "")
    messages.success(request, message)
    return redirect(reverse("web:batch-detail", args=[batch.uuid]) + "#batch-costs")


@login_required
@require_POST
def batch_deadline(request, batch_id):
    """Sets, changes or (action=remove) removes the batch's deadline; a bad time is shown next to the field."""
    batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
    form = DeadlineForm(request.POST)
    deadline, errors = form.deadline_value(provider=batch.provider)
    if errors:
        return _batch_page(request, batch, deadline_form=form, deadline_errors=errors, status=400)
    services.batch_set_deadline(batch=batch, deadline=deadline)
    messages.success(request, "Deadline removed." if deadline is None else
                     f"Deadline set: {estimates.clock_text(deadline)}. If the GPU alone would finish later, the "
                     "fewest jobs needed move to fal.ai.")
    return redirect(reverse("web:batch-detail", args=[batch.uuid]) + "#batch-plan")


@login_required
@require_POST
def batch_cancel(request, batch_id):
    batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
    cancelled = services.batch_cancel(batch=batch)
    messages.info(request, f"Cancelled {plural(cancelled, 'unfinished job')}." if cancelled
                  else "Nothing was left to cancel.")
    return redirect("web:batch-detail", batch.uuid)


@login_required
@require_POST
def batch_retry(request, batch_id):
    batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
    retried = services.batch_retry_failed(batch=batch)
    messages.info(request, f"Retrying {plural(retried, 'failed job')}." if retried else "No failed jobs to retry.")
    return redirect("web:batch-detail", batch.uuid)


@login_required
@require_safe
def batch_download(request, batch_id):
    """Every finished video of the batch and a CSV manifest of all its jobs, as one ZIP (resumable)."""
    batch = selectors.batch_get(user=request.user, batch_uuid=batch_id)
    jobs = _shown_jobs(selectors.batch_jobs(batch=batch), request.user)
    filename = exports.export_filename(batch)
    if (not exports.export_is_kept(batch, jobs) and request.method == "GET" and "Range" not in request.headers
            and not settings.GENHUB_ACCEL_REDIRECT_PREFIX):
        # The first download of this state starts at once (a thousand clips take a while to copy) and
        # keeps a copy; a resume, or the next download, gets the copy with byte ranges.
        response = StreamingHttpResponse(exports.batch_zip_kept_stream(batch, jobs), content_type="application/zip")
        response["Content-Disposition"] = content_disposition_header(True, filename)
        return response
    return serve_stored(request, exports.batch_zip_stored(batch, jobs), content_type="application/zip",
                        filename=filename, as_attachment=True)


def _job_redirect(job):
    return redirect(reverse("web:batch-detail", args=[job.batch.uuid]) + f"#job-{job.uuid}")


@login_required
@require_POST
def job_cancel(request, job_id):
    job = selectors.job_get(user=request.user, job_uuid=job_id)
    if services.job_cancel(job=job):
        messages.info(request, f"Cancelled {job.input_name} (seed {job.seed}).")
    else:
        messages.warning(request, f"{job.input_name} had already finished; nothing to cancel.")
    return _job_redirect(job)


@login_required
@require_POST
def job_retry(request, job_id):
    job = selectors.job_get(user=request.user, job_uuid=job_id)
    if services.job_retry(job=job):
        messages.info(request, f"Retrying {job.input_name} (seed {job.seed}).")
    else:
        messages.warning(request, f"{job.input_name} is {STATUS_LABELS[job.status].lower()}: only failed or "
                                  "cancelled jobs can be retried.")
    return _job_redirect(job)


@login_required
@require_safe
def job_input_image(request, job_id):
    """The job's input picture, for its card while the video is not there yet (owner only, like all media)."""
    job = selectors.job_get(user=request.user, job_uuid=job_id)
    if not job.input_image:
        raise Http404("this job's image has not been fetched")
    return serve_stored(
        request, job.input_image.name,
        content_type=mimetypes.guess_type(job.input_image.name)[0] or "application/octet-stream",
        cache_control="private, max-age=86400")  # stored by content hash: it never changes
