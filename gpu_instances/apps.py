from django.apps import AppConfig


class GpuInstancesConfig(AppConfig):
    name = "gpu_instances"
    verbose_name = "GPU instances"
