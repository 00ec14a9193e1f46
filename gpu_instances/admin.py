from django.contrib import admin

from gpu_instances.models import GpuInstance, InstanceEvent


class InstanceEventInline(admin.TabularInline):
    model = InstanceEvent
    fields = ("at", "kind", "from_state", "to_state", "message")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(GpuInstance)
class GpuInstanceAdmin(admin.ModelAdmin):
    list_display = ("__str__", "vast_id", "state", "gpu_name", "dph_usd", "created_at", "ready_at", "last_health_at",
                    "health_failures", "destroyed_at")
    list_filter = ("state", "gpu_name")
    search_fields = ("vast_id", "label", "gpu_name", "end_reason")
    # The SwarmUI token is a credential: it is excluded from every admin page.
    exclude = ("swarmui_token",)
    inlines = [InstanceEventInline]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in GpuInstance._meta.fields if f.name != "swarmui_token"]

    def has_add_permission(self, request):
        return False


@admin.register(InstanceEvent)
class InstanceEventAdmin(admin.ModelAdmin):
    list_display = ("at", "instance", "kind", "from_state", "to_state", "message")
    list_filter = ("kind",)
    search_fields = ("message",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
