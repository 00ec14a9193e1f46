"""Settings for the test suite: the real settings, with test defaults for what the environment leaves unset."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/genhub")
os.environ.setdefault("SECRET_KEY", "test-only-key")
os.environ.setdefault("FAL_KEY", "test-fal-key:secret")
# Tests talk to simulators on 127.0.0.1 only: until a test starts one, the outside world is a closed local port.
os.environ.setdefault("FAL_QUEUE_URL", "http://127.0.0.1:9")
os.environ.setdefault("VAST_API_URL", "http://127.0.0.1:9")
os.environ.setdefault("VAST_API_KEY", "test-vast-key")
os.environ.setdefault("FAL_POLL_INTERVAL", "0.2")
os.environ.setdefault("HTTP_BACKOFF_SECONDS", "0.05")
os.environ.setdefault("GENHUB_PUMP_SECONDS", "20")
os.environ.setdefault("VAST_PACING_SCALE", "0")
os.environ.setdefault("VAST_DISPATCH_INTERVAL", "0.1")
os.environ.setdefault("GENHUB_RECONCILE_INTERVAL", "0.1")
os.environ.setdefault("GENHUB_RECONCILE_SECONDS", "20")
os.environ.setdefault("SWARMUI_IMAGE", "genhub/swarmui:test")
# The simulators live on 127.0.0.1 and the fal simulator serves its own files.
os.environ.setdefault("GENHUB_ALLOW_PRIVATE_DOWNLOADS", "1")
os.environ.setdefault("FAL_FILE_HOSTS", "v3.fal.media,v3b.fal.media,127.0.0.1")

from genhub.settings import *  # noqa: E402,F403

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", "/tmp/genhub-test-media"))  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
