from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from gpu_instances import exposure, selectors, services


class InstanceOutputSerializer(serializers.Serializer):
    """Never includes the SwarmUI token. Its address only for staff (`address`, and in `end_reason`)."""

    vast_id = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    gpu_name = serializers.CharField()
    dph_usd = serializers.DecimalField(max_digits=8, decimal_places=4, allow_null=True)
    created_at = serializers.DateTimeField()
    ready_at = serializers.DateTimeField(allow_null=True)
    last_health_at = serializers.DateTimeField(allow_null=True)
    last_health_ok = serializers.BooleanField(allow_null=True)
    destroyed_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.SerializerMethodField()
    address = serializers.SerializerMethodField()
    qualification = serializers.CharField(help_text="self-test outcome: '' (not yet), passed, failed, skipped")
    qualified_at = serializers.DateTimeField(allow_null=True)
    cost_so_far_usd = serializers.SerializerMethodField()
    overhead_usd = serializers.SerializerMethodField()

    def _user(self):
        request = self.context.get("request")
        return request.user if request is not None else None

    def get_end_reason(self, instance) -> str:
        return exposure.shown(instance.end_reason, self._user(), instance)

    def get_address(self, instance) -> str | None:
        """The instance's SwarmUI URL, for staff; null for everyone else."""
        return (instance.base_url or None) if exposure.sees_addresses(self._user()) else None

    def get_cost_so_far_usd(self, instance) -> str:
        return str(services.instance_costs(instance)[0])

    def get_overhead_usd(self, instance) -> str:
        """Billed time no job used: boot and idle."""
        return str(services.instance_costs(instance)[2])


class InstanceApi(APIView):
    @extend_schema(responses=inline_serializer("InstanceStatus", {
        "active": InstanceOutputSerializer(allow_null=True), "history": InstanceOutputSerializer(many=True)}))
    def get(self, request):
        active = selectors.instance_active()
        context = {"request": request}
        return Response({
            "active": InstanceOutputSerializer(active, context=context).data if active else None,
            "history": InstanceOutputSerializer(selectors.instance_history(), many=True, context=context).data,
        })
