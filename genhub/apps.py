import sys

from django.apps import AppConfig


class GenhubConfig(AppConfig):
    name = "genhub"
    verbose_name = "genhub"

    def ready(self):
        from genhub import checks  # noqa: F401  (registers the system checks)

        if sys.argv[1:2] == ["qcluster"]:
            from genhub.memory import preload_worker_modules

            preload_worker_modules()  # before django-q2 forks the workers, so that they share them
