from django.contrib import admin, messages
from django.db.models import F
from django.utils.html import format_html

from genhub.formatting import plural, usd
from jobs import services
from jobs.image_sources import shown_url
from jobs.models import Alert, BatchRun, Job, WebhookDelivery

S = Job.Status


class ReadOnlyHistoryMixin:
    """Jobs and batches are history: they change through services (actions), never by editing fields."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class JobInline(ReadOnlyHistoryMixin, admin.TabularInline):
    model = Job
    fields = ("input_name", "seed", "status", "progress_pct", "attempts", "error_code", "cost", "instance")
    readonly_fields = fields
    show_change_link = True
    extra = 0
    max_num = 0

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.progress:.0%}"

    @admin.display(description="cost")
    def cost(self, obj):
        return usd(obj.cost_usd)


@admin.register(BatchRun)
class BatchRunAdmin(ReadOnlyHistoryMixin, admin.ModelAdmin):
    # Few, narrow columns so the list fits a 1280 px screen; the counts share one column.
    list_display = ("__str__", "owner", "provider", "created_at", "jobs_summary", "cost", "budget")
    list_filter = ("provider", "fallback_policy", "created_at")
    search_fields = ("name", "uuid", "owner__username")
    inlines = [JobInline]
    actions = ["cancel_batches", "retry_failed"]
    # The webhook's signing secret was shown to its owner once; nobody sees it again, staff included.
    exclude = ("webhook_secret",)

    def get_queryset(self, request):
        # The maintained counts (BatchCounts): the list never adds up jobs.
        first, *rest = Job.UNFINISHED
        unfinished = sum((F(f"tally__n_{status}") for status in rest), F(f"tally__n_{first}"))
        return super().get_queryset(request).select_related("owner").annotate(
            _total=F("tally__n_total"), _succeeded=F("tally__n_succeeded"), _failed=F("tally__n_failed"),
            _active=unfinished, _cost=F("tally__cost_usd"))

    @admin.display(description="jobs", ordering="_total")
    def jobs_summary(self, obj):
        return f"{obj._total}: {obj._succeeded} ok, {obj._failed} failed, {obj._active} unfinished"

    @admin.display(description="cost", ordering="_cost")
    def cost(self, obj):
        return usd(obj._cost)

    @admin.display(description="budget", ordering="budget_usd")
    def budget(self, obj):
        return usd(obj.budget_usd, places=2)

    @admin.action(description="Cancel what has not finished")
    def cancel_batches(self, request, queryset):
        count = sum(services.batch_cancel(batch=batch) for batch in queryset)
        self.message_user(request, f"Cancelled {plural(count, 'job')}.", messages.SUCCESS)

    @admin.action(description="Retry failed jobs")
    def retry_failed(self, request, queryset):
        count = sum(services.batch_retry_failed(batch=batch) for batch in queryset)
        self.message_user(request, f"Requeued {plural(count, 'job')}.", messages.SUCCESS)


@admin.register(Job)
class JobAdmin(ReadOnlyHistoryMixin, admin.ModelAdmin):
    # "batch · input name · seed" names the job; the UUID, error and instance are on its page.
    list_display = ("__str__", "owner", "provider", "status", "progress_pct", "attempts", "cost", "finished_at")
    list_filter = ("status", "provider", "fallback_from", "error_code", "created_at")
    search_fields = ("uuid", "input_name", "prompt", "external_id", "batch__name", "owner__username")
    list_select_related = ("batch", "owner", "instance")
    actions = ["cancel_jobs", "retry_jobs"]
    # provider_ref holds fal's request URLs or a SwarmUI session id, neither of them a credential (SwarmUI also
    # wants the instance token, which never is on a job).
    # An image URL's query string may be the owner's signature for their bucket: shown without it.
    exclude = ("image_url",)
    readonly_fields = [f.name for f in Job._meta.fields if f.name != "image_url"] + ["cost", "video_player",
                                                                                      "image_source"]

    @admin.display(description="image URL")
    def image_source(self, obj):
        return shown_url(obj.image_url) if obj.image_url else "—"

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.progress:.0%}"

    @admin.display(description="cost", ordering="cost_usd")
    def cost(self, obj):
        return usd(obj.cost_usd)

    @admin.display(description="video")
    def video_player(self, obj):
        if not obj.output_video:
            return "—"
        return format_html('<video src="/api/jobs/{}/video" controls width="320"></video>', obj.uuid)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        count = sum(services.job_cancel(job=job) for job in queryset)
        self.message_user(request, f"Cancelled {plural(count, 'job')}; finished ones were left alone.",
                          messages.SUCCESS)

    @admin.action(description="Retry selected failed/cancelled jobs")
    def retry_jobs(self, request, queryset):
        count = sum(services.job_retry(job=job) for job in queryset)
        self.message_user(request, f"Requeued {plural(count, 'job')}; others were not failed or cancelled.",
                          messages.SUCCESS)


@admin.register(Alert)
class AlertAdmin(ReadOnlyHistoryMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "message", "batch", "resolved_at", "delivered_at")
    list_filter = ("kind", ("resolved_at", admin.EmptyFieldListFilter), ("delivered_at", admin.EmptyFieldListFilter))
    search_fields = ("message", "key")
    readonly_fields = [f.name for f in Alert._meta.fields]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyHistoryMixin, admin.ModelAdmin):
    list_display = ("created_at", "event", "batch", "job", "attempts", "delivered_at", "next_attempt_at", "last_error")
    list_filter = ("event", ("delivered_at", admin.EmptyFieldListFilter))
    search_fields = ("uuid", "batch__name", "batch__uuid")
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
