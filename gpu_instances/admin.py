from django.contrib import admin, messages
from django.template.loader import render_to_string
from django.utils.html import format_html

from genhub.formatting import usd
from gpu_instances import services, speed
from gpu_instances.models import GpuInstance, InstanceEvent, OfferSearch, SpeedSample
from gpu_instances.orchestrator import VastAIOrchestrator


class InstanceEventInline(admin.TabularInline):
    model = InstanceEvent
    fields = ("at", "kind", "from_state", "to_state", "message")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(GpuInstance)
class GpuInstanceAdmin(admin.ModelAdmin):
    # The name already says vast id, GPU and state; few, narrow columns so the list fits 1280 px.
    list_display = ("__str__", "price", "created_at", "health", "cost", "jobs_link")
    list_filter = ("state", "gpu_name")
    search_fields = ("vast_id", "label", "gpu_name", "end_reason")
    # The SwarmUI token is a credential: it is excluded from every admin page.
    exclude = ("swarmui_token",)
    inlines = [InstanceEventInline]
    actions = ["destroy_instances"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in GpuInstance._meta.fields if f.name != "swarmui_token"] + [
            "price", "cost", "jobs_link", "speed_history"]

    @admin.display(description="$/hour", ordering="dph_usd")
    def price(self, obj):
        return usd(obj.dph_usd)

    @admin.display(description="last health")
    def health(self, obj):
        if obj.last_health_at is None:
            return "—"
        verdict = "ok" if obj.last_health_ok else f"failing ({obj.health_failures}×)"
        return f"{verdict} {obj.last_health_at:%H:%M:%S}"

    @admin.display(description="billed / overhead")
    def cost(self, obj):
        total, _, overhead = services.instance_costs(obj)
        return f"{usd(total)} / {usd(overhead)}"

    @admin.display(description="speed history")
    def speed_history(self, obj):
        """What this machine and its GPU model have measured (jobs and self-tests)."""
        if not obj.gpu_name:
            return "—"
        machine = speed.speed_history(machine_id=obj.machine_id) if obj.machine_id else []
        return render_to_string("admin/gpu_instances/_speed_history.html", {"tables": [
            (f"machine {obj.machine_id}", machine), (f"all {obj.gpu_name} machines", speed.speed_history(
                gpu_name=obj.gpu_name))]})

    @admin.display(description="jobs")
    def jobs_link(self, obj):
        # A link, not an inline: this app sits below `jobs` and does not import it.
        return format_html('<a href="/admin/jobs/job/?instance__id__exact={}">jobs on this instance</a>', obj.pk)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Destroy (its jobs go back to the queue)")
    def destroy_instances(self, request, queryset):
        orchestrator = VastAIOrchestrator()
        for instance in queryset:
            orchestrator.destroy(instance, f"operator: destroyed from the admin by {request.user}")
            instance.refresh_from_db()
            self.message_user(request, f"{instance}: {instance.state}", messages.INFO)


@admin.register(InstanceEvent)
class InstanceEventAdmin(admin.ModelAdmin):
    list_display = ("at", "instance", "kind", "from_state", "to_state", "message")
    list_filter = ("kind",)
    search_fields = ("message",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OfferSearch)
class OfferSearchAdmin(admin.ModelAdmin):
    """The shared offer cache and the search-quota block: read-only, for seeing why nothing is rented."""

    list_display = ("name", "searched_at", "offer_count", "blocked_until", "blocked_reason")
    readonly_fields = ("name", "filters_key", "offers", "searched_at", "blocked_until", "blocked_reason", "blocked_at")

    @admin.display(description="cached offers")
    def offer_count(self, obj):
        return len(obj.offers or [])

    def has_add_permission(self, request):
        return False


@admin.register(SpeedSample)
class SpeedSampleAdmin(admin.ModelAdmin):
    """The measurements behind qualification, ranking and estimates; the list page opens with a summary
    per GPU model and per machine."""

    list_display = ("at", "gpu_name", "machine_id", "instance", "clip", "seconds", "source")
    list_filter = ("source", "gpu_name")
    search_fields = ("gpu_name", "=machine_id")
    change_list_template = "admin/gpu_instances/speedsample/change_list.html"

    @admin.display(description="clip")
    def clip(self, obj):
        return speed.describe_shape((obj.frames, obj.width, obj.height, obj.steps))

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "speed_tables": [
            ("by GPU model", speed.speed_history(), False),
            ("by machine", speed.speed_history(per_machine=True), True)]}
        return super().changelist_view(request, extra_context=extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
