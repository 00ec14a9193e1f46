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
# The free-space hold is tested on its own (tests/jobs/test_paid_results.py); a nearly full test machine
# must not hold every other test's dispatch.
os.environ.setdefault("GENHUB_STORAGE_MIN_FREE_MB", "0")

# The suite and its live servers speak plain HTTP on 127.0.0.1 (tests/test_deploy_settings.py checks the
# production defaults in a process of their own).
for name in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_INCLUDE_SUBDOMAINS"):
    os.environ.setdefault(name, "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
# The simulators live on 127.0.0.1 and the fal simulator serves its own files.
os.environ.setdefault("GENHUB_ALLOW_PRIVATE_DOWNLOADS", "1")
# Images by URL come from local test servers over plain HTTP (issue 13).
os.environ.setdefault("GENHUB_IMAGE_URL_ALLOW_HTTP", "1")
os.environ.setdefault("FAL_FILE_HOSTS", "v3.fal.media,v3b.fal.media,127.0.0.1")

from genhub.settings import *  # noqa: E402,F403

MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", "/tmp/genhub-test-media"))  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
