from django.apps import AppConfig


class GenhubConfig(AppConfig):
    name = "genhub"
    verbose_name = "genhub"

    def ready(self):
        from genhub import checks  # noqa: F401  (registers the system checks)
