"""genhub settings. Every value comes from the environment (django-environ); `.env.example` lists them all."""

from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from genhub import storage as genhub_storage

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is for development only; production sets real environment variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS in production (issue 10): on unless DEBUG, each can be turned off explicitly ---
# genhub runs behind a TLS proxy: cookies only over HTTPS, plain HTTP redirected, browsers told to stay
# on HTTPS (HSTS). SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https" tells Django which proxy header
# says the request came over HTTPS; set it only when the proxy always sets (or strips) that header.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
# Preload is a promise to browser vendors, for the whole domain and slow to undo: only when asked for.
# Not asking is a decision, so check --deploy's reminder about it (W021) is silenced while it is off.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_PROXY_SSL_HEADER = tuple(env.list("SECURE_PROXY_SSL_HEADER", default=[])) or None
if SECURE_PROXY_SSL_HEADER is not None and len(SECURE_PROXY_SSL_HEADER) != 2:
    raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER is 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI as static files: /api/docs/ works offline
    "django_q",
    "genhub",
    "providers",
    "gpu_instances",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "genhub.urls"
WSGI_APPLICATION = "genhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "genhub.context_processors.simulation",
                "genhub.context_processors.alerts",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# The cluster's broker reconnects on every poll unless connections are kept.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite is the zero-setup default: web and cluster processes share the file, so wait for locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "media")))
# Media is never served publicly: videos go through owner-checked views.
MEDIA_URL = "/media-not-public/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- object storage (issue 13): inputs, videos, posters and exports in an S3-compatible bucket ---
# Local disk (MEDIA_ROOT) is the zero-setup default; with more than one host it must be a shared filesystem, or
# use S3. GENHUB_STORAGE=s3 (implied by AWS_STORAGE_BUCKET_NAME) stores every file in the bucket through
# django-storages. The keys are not settings: boto3 reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a role)
# from the environment itself, so they never appear in a settings dump or an error page (genhub/storage.py).
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="") or None  # e.g. MinIO, R2, B2; unset = AWS itself
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="") or None
GENHUB_STORAGE = (env("GENHUB_STORAGE", default="")
                  or (genhub_storage.S3 if AWS_STORAGE_BUCKET_NAME else genhub_storage.LOCAL))
# Downloads from S3 are a 302 to a signed URL valid this long (a player seeks with Range on that URL).
GENHUB_S3_PRESIGN_SECONDS = env.int("GENHUB_S3_PRESIGN_SECONDS", default=300)
# Where browsers reach the object store, when genhub reaches it at an internal address (unset = the same).
GENHUB_S3_PUBLIC_ENDPOINT_URL = env("GENHUB_S3_PUBLIC_ENDPOINT_URL", default="")
STORAGES["default"] = genhub_storage.default_backend(
    kind=GENHUB_STORAGE, bucket=AWS_STORAGE_BUCKET_NAME,
    endpoint_url=AWS_S3_ENDPOINT_URL or "", region=AWS_S3_REGION_NAME or "",
    addressing_style=env("AWS_S3_ADDRESSING_STYLE", default=""),  # "path" for most S3-compatible servers
    location=env("AWS_LOCATION", default=""),  # a key prefix inside the bucket
    presign_seconds=GENHUB_S3_PRESIGN_SECONDS)

# Bulk uploads: the per-request file count must allow the largest batch (validated with a clear error).
GENHUB_MAX_BATCH_ITEMS = env.int("GENHUB_MAX_BATCH_ITEMS", default=1000)
GENHUB_MAX_IMAGE_BYTES = env.int("GENHUB_MAX_IMAGE_BYTES", default=7 * 1024 * 1024)
GENHUB_MAX_IMAGE_SIDE = env.int("GENHUB_MAX_IMAGE_SIDE", default=4096)
GENHUB_MIN_IMAGE_SIDE = env.int("GENHUB_MIN_IMAGE_SIDE", default=64)
DATA_UPLOAD_MAX_NUMBER_FILES = GENHUB_MAX_BATCH_ITEMS + 2
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024

# --- request bodies (issue 10): measured while they arrive, refused at the first limit ---
# jobs.upload_limits.UploadLimitHandler refuses a body over GENHUB_MAX_UPLOAD_BYTES by its Content-Length,
# unread, and stops any file the moment it passes its limit (images GENHUB_MAX_IMAGE_BYTES, ZIPs
# GENHUB_MAX_ARCHIVE_BYTES, rows files GENHUB_MAX_ROWS_BYTES). A request over FILE_UPLOAD_MAX_MEMORY_SIZE has
# its files spooled to disk, so its memory stays small even for a full batch (one descriptor per file:
# give the web process an open-file limit above GENHUB_MAX_BATCH_ITEMS).
GENHUB_MAX_UPLOAD_BYTES = env.int("GENHUB_MAX_UPLOAD_BYTES", default=2 * 1024 * 1024 * 1024)
GENHUB_MAX_ROWS_BYTES = env.int("GENHUB_MAX_ROWS_BYTES", default=16 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
FILE_UPLOAD_HANDLERS = [
    "jobs.upload_limits.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.apis.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "jobs.upload_limits.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "genhub API",
    "DESCRIPTION": "Bulk Wan 2.2 image-to-video on fal.ai or a persistent vast.ai GPU.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from our own static files (drf-spectacular-sidecar), never a CDN: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- task queue (django-q2, ORM broker). Read once at import: changes need a restart. ---
Q_CLUSTER = {
    "name": "genhub",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=6),
    # Hard cap per task. Generation tasks stream one clip; pumps loop for at most GENHUB_PUMP_SECONDS.
    "timeout": env.int("Q_TIMEOUT", default=900),
    # Few locked-but-waiting rows: their redelivery clock (`retry`) is already running.
    "queue_limit": env.int("Q_QUEUE_LIMIT", default=2),
    # Must exceed timeout × (ceil((queue_limit + 1) / workers) + 1); genhub.checks refuses to start otherwise.
    "retry": env.int("Q_RETRY", default=3600),
    # Jobs carry their own attempts; a task that raises is recorded once and the stale sweep recovers its job.
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": env.float("Q_POLL", default=1.0),
    "recycle": 100,
    "label": "Task queue",
}

# --- providers ---
GENHUB_PROVIDERS = {
    "fal": "providers.fal.FalProvider",
    "vastai": "gpu_instances.provider.VastAIProvider",
}

FAL_KEY = env("FAL_KEY", default="")
FAL_QUEUE_URL = env("FAL_QUEUE_URL", default="https://queue.fal.run")
FAL_ENDPOINT = env("FAL_ENDPOINT", default="fal-ai/wan/v2.2-a14b/image-to-video")
FAL_MAX_IN_FLIGHT = env.int("FAL_MAX_IN_FLIGHT", default=40)
FAL_POLL_INTERVAL = env.float("FAL_POLL_INTERVAL", default=5.0)
# A request fal has not finished this long after it started (its first IN_PROGRESS; time waiting in fal's own
# queue does not count) is cancelled there and retried (a lost runner).
FAL_JOB_DEADLINE_SECONDS = env.int("FAL_JOB_DEADLINE_SECONDS", default=1800)
# fal bills Wan 2.2 A14B per video-second, counted at 16 fps, by resolution (USD).
FAL_PRICE_PER_VIDEO_SECOND = {
    "480p": Decimal(env("FAL_PRICE_480P", default="0.04")),
    "580p": Decimal(env("FAL_PRICE_580P", default="0.06")),
    "720p": Decimal(env("FAL_PRICE_720P", default="0.08")),
}
FAL_BILLING_FPS = 16

VAST_API_KEY = env("VAST_API_KEY", default="")
VAST_API_URL = env("VAST_API_URL", default="https://console.vast.ai")
SWARMUI_IMAGE = env("SWARMUI_IMAGE", default="")
# The models the image bakes in (providers/swarmui_contract.py); the swap (low-noise) model only when the
# image was built with WITH_LOW_NOISE=1.
SWARMUI_VIDEO_MODEL = env("SWARMUI_VIDEO_MODEL", default="Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf")
SWARMUI_SWAP_MODEL = env("SWARMUI_SWAP_MODEL", default="")
GENHUB_INSTANCE_LABEL = env("GENHUB_INSTANCE_LABEL", default="genhub")

# --- HTTP seam ---
HTTP_CONNECT_TIMEOUT = env.float("HTTP_CONNECT_TIMEOUT", default=5.0)
HTTP_READ_TIMEOUT = env.float("HTTP_READ_TIMEOUT", default=60.0)
HTTP_MAX_TRIES = env.int("HTTP_MAX_TRIES", default=4)
HTTP_BACKOFF_SECONDS = env.float("HTTP_BACKOFF_SECONDS", default=1.0)

# --- trust of remote parties: provider replies and the pinned channel to the GPU (issue 10) ---
# Addresses taken from a provider's reply (fal file URLs, the instance IP vast reports) may not be
# loopback, private or link-local, and plain http is refused, unless this is on (the simulators run
# on 127.0.0.1 in development and tests).
GENHUB_ALLOW_PRIVATE_DOWNLOADS = env.bool("GENHUB_ALLOW_PRIVATE_DOWNLOADS", default=DEBUG)
# An output file larger than this is refused while it streams in (bytes).
GENHUB_MAX_DOWNLOAD_BYTES = env.int("GENHUB_MAX_DOWNLOAD_BYTES", default=512 * 2**20)
# The only hosts fal output files are fetched from (fal's CDN); `*.example.com` matches subdomains.
FAL_FILE_HOSTS = env.list("FAL_FILE_HOSTS", default=["v3.fal.media", "v3b.fal.media"])

# --- jobs ---
GENHUB_JOB_MAX_ATTEMPTS = env.int("GENHUB_JOB_MAX_ATTEMPTS", default=3)
# A worker holding a job beats this often, from a thread of its own whatever the generation does.
GENHUB_HEARTBEAT_SECONDS = env.float("GENHUB_HEARTBEAT_SECONDS", default=5)
# A running job whose heartbeat is older than this is presumed lost with its worker: a few missed beats
# (issue 9), not minutes, so a killed cluster's jobs run again within seconds of its restart.
GENHUB_STALE_JOB_SECONDS = env.float("GENHUB_STALE_JOB_SECONDS", default=4 * GENHUB_HEARTBEAT_SECONDS)
# How long one pump task keeps looping before handing over to a fresh task (well under Q_CLUSTER timeout).
GENHUB_PUMP_SECONDS = env.float("GENHUB_PUMP_SECONDS", default=60.0)
# Output check: how far the stored video may be from what was asked.
GENHUB_VIDEO_FRAME_TOLERANCE = env.int("GENHUB_VIDEO_FRAME_TOLERANCE", default=2)
GENHUB_VIDEO_DURATION_TOLERANCE = env.float("GENHUB_VIDEO_DURATION_TOLERANCE", default=0.25)
# --- output frame size (issue 11): pixels each side may differ where the backend renders the asked size
# (providers round to multiples of 8/16); relative aspect difference where it picks the size (fal). ---
GENHUB_VIDEO_SIZE_TOLERANCE_PX = env.int("GENHUB_VIDEO_SIZE_TOLERANCE_PX", default=16)
GENHUB_VIDEO_ASPECT_TOLERANCE = env.float("GENHUB_VIDEO_ASPECT_TOLERANCE", default=0.05)
# --- metrics (issue 11): a Prometheus scraper sends `Authorization: Bearer <this>`; unset → staff sessions only.
GENHUB_METRICS_TOKEN = env("GENHUB_METRICS_TOKEN", default="")

# Simulated outside world for development and tests (set by `manage.py run_simulators` / the run script).
GENHUB_SIMULATED = env.bool("GENHUB_SIMULATED", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        # django-q2 logs to "django-q" (hyphen); without a handler it installs its own.
        "django-q": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "urllib3": {"level": "WARNING"},
    },
}

# --- the vast.ai GPU instance ---
# Callables of the jobs app the orchestrator needs, by dotted path (imports only point down).
GENHUB_GPU_HOOKS = {
    "demand": "jobs.budget.gpu_demand",
    "instance_lost": "jobs.services.jobs_requeue_for_instance",
    "release_reason": "jobs.gpu_policy.gpu_release_reason",
    "attributed_cost": "jobs.spend.instance_attributed",
    "instance_progress": "jobs.gpu_watch.instance_progress",
    "instance_stalled": "jobs.services.jobs_release_for_instance",
    "waiting_params": "jobs.gpu_policy.gpu_waiting_params",  # the clip offers are ranked for (issue 12)
}
VAST_GPU_NAMES = env.list("VAST_GPU_NAMES", default=["H100 SXM", "H100 PCIE", "H100 NVL", "H200", "H200 NVL",
                                                     "A100 SXM4", "A100 PCIE", "A100X"])
VAST_MIN_CUDA = env("VAST_MIN_CUDA", default="12.8")
VAST_MIN_RELIABILITY = env.float("VAST_MIN_RELIABILITY", default=0.98)
VAST_VERIFIED_ONLY = env.bool("VAST_VERIFIED_ONLY", default=True)
VAST_DISK_GB = env.int("VAST_DISK_GB", default=100)
VAST_MIN_DISK_GB = env.int("VAST_MIN_DISK_GB", default=VAST_DISK_GB)
VAST_MIN_INET_DOWN_MBPS = env.float("VAST_MIN_INET_DOWN_MBPS", default=500)
VAST_MAX_DPH = env.float("VAST_MAX_DPH", default=3.0)
# Jobs on the instance at once: one generating and one queued inside SwarmUI, so the GPU never idles.
VAST_MAX_IN_FLIGHT = env.int("VAST_MAX_IN_FLIGHT", default=2)
VAST_DISPATCH_INTERVAL = env.float("VAST_DISPATCH_INTERVAL", default=1.0)
VAST_BOOT_DEADLINE_SECONDS = env.int("VAST_BOOT_DEADLINE_SECONDS", default=1800)
# A just-created contract may briefly be unknown to `show`; only after this long does that mean "gone".
VAST_NEW_INSTANCE_GRACE_SECONDS = env.float("VAST_NEW_INSTANCE_GRACE_SECONDS", default=30)
# Hysteresis: act only after this many consecutive failed probes spread over at least this long.
VAST_HEALTH_FAILURES = env.int("VAST_HEALTH_FAILURES", default=3)
VAST_HEALTH_MIN_SECONDS = env.int("VAST_HEALTH_MIN_SECONDS", default=60)
VAST_HEALTH_TIMEOUT_SECONDS = env.float("VAST_HEALTH_TIMEOUT_SECONDS", default=10)
VAST_AVOID_MACHINE_HOURS = env.int("VAST_AVOID_MACHINE_HOURS", default=24)
# One reconcile task makes short steps this far apart for at most this long, then hands over.
GENHUB_RECONCILE_SECONDS = env.float("GENHUB_RECONCILE_SECONDS", default=50)
GENHUB_RECONCILE_INTERVAL = env.float("GENHUB_RECONCILE_INTERVAL", default=5)
# vast.ai enforces minimum intervals per endpoint; the client paces itself at these × this factor
# (0 only against the simulator).
VAST_PACING_SCALE = env.float("VAST_PACING_SCALE", default=1.0)

# --- GPU faults: progress watchdog, vast status hysteresis, database blips ---
# A generation with no progress for this long is a stall (0 = derive it from genhub's measured time per step
# on the instance for the jobs' parameters × SWARMUI_STALL_FACTOR, never below SWARMUI_STALL_FLOOR_SECONDS).
# Ladder per instance: 1st stall → InterruptAll + requeue (attempt kept), 2nd → RestartBackends, 3rd → replace.
SWARMUI_STALL_SECONDS = env.float("SWARMUI_STALL_SECONDS", default=0)
SWARMUI_STALL_FLOOR_SECONDS = env.float("SWARMUI_STALL_FLOOR_SECONDS", default=90)
SWARMUI_STALL_FACTOR = env.float("SWARMUI_STALL_FACTOR", default=5)
# After RestartBackends, how long the backend may take to run again before the instance is replaced.
SWARMUI_RESTART_DEADLINE_SECONDS = env.float("SWARMUI_RESTART_DEADLINE_SECONDS", default=300)
# A worker retries recording a finished generation this long while the database is away.
GENHUB_DB_RETRY_SECONDS = env.float("GENHUB_DB_RETRY_SECONDS", default=120)

# --- knowing the GPU (issue 12): qualification and offer ranking ---
# A newly ready instance makes one short self-test clip before user jobs; slower than TOLERANCE × what its
# GPU model is expected to take (genhub's history, else the shipped table) → replaced, machine avoided.
# The same tolerance leaves out offers on machines whose history is that much slower than their model.
VAST_QUALIFY = env.bool("VAST_QUALIFY", default=True)
VAST_QUALIFY_TOLERANCE = env.float("VAST_QUALIFY_TOLERANCE", default=1.5)
VAST_QUALIFY_FRAMES = env.int("VAST_QUALIFY_FRAMES", default=17)


def _qualify_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in value.lower().split("x"))
    except ValueError:
        width = height = 0
    if not all(256 <= side <= 1280 and side % 16 == 0 for side in (width, height)):
        raise ImproperlyConfigured(f"VAST_QUALIFY_SIZE must be WIDTHxHEIGHT with sides multiples of 16 in "
                                   f"256-1280 (e.g. 256x256), not {value!r}")
    return width, height


VAST_QUALIFY_SIZE = _qualify_size(env("VAST_QUALIFY_SIZE", default="256x256"))
VAST_QUALIFY_STEPS = env.int("VAST_QUALIFY_STEPS", default=4)
# A self-test that errors (not one that is slow) is tried this many times before the machine is given up.
VAST_QUALIFY_TRIES = env.int("VAST_QUALIFY_TRIES", default=2)
# A warm-up clip first (it loads the models), so the measured one is steady-state like the jobs after it.
VAST_QUALIFY_WARMUP = env.bool("VAST_QUALIFY_WARMUP", default=True)
# After this many hosts in a row failed for slowness, the next is kept: the expectation is then the suspect.
VAST_QUALIFY_MAX_REPLACEMENTS = env.int("VAST_QUALIFY_MAX_REPLACEMENTS", default=3)

# --- web app (issue 5): dry-run estimates and ZIP uploads ---
# Planning numbers for the dry run on the new-batch page only; what a job really cost is measured per job.
# fal runs up to FAL_MAX_IN_FLIGHT (above) clips at once, so its time estimate divides by that.
FAL_ESTIMATED_SECONDS_PER_CLIP = env.int("FAL_ESTIMATED_SECONDS_PER_CLIP", default=90)
# One rented GPU makes one clip at a time: time = items × seconds, cost = that time at the typical $/h.
VAST_ESTIMATED_SECONDS_PER_CLIP = env.int("VAST_ESTIMATED_SECONDS_PER_CLIP", default=60)
VAST_ESTIMATED_DPH = Decimal(env("VAST_ESTIMATED_DPH", default="1.50"))
# Uploaded ZIPs are unpacked in memory: what all archives of one request may unpack to, and the
# largest compression ratio a member may have (images hardly compress; a far higher ratio is a zip bomb).
GENHUB_MAX_ARCHIVE_BYTES = env.int("GENHUB_MAX_ARCHIVE_BYTES", default=1024 * 1024 * 1024)
GENHUB_MAX_ARCHIVE_RATIO = env.int("GENHUB_MAX_ARCHIVE_RATIO", default=100)

# --- serving stored files (videos, posters, ZIP exports) ---
# Empty: genhub sends the bytes itself (ranges included). Set to the URL prefix of an nginx `internal`
# location aliasing MEDIA_ROOT (e.g. /protected-media/) and genhub, after its ownership check, answers
# with X-Accel-Redirect and no body, and nginx sends the file.
GENHUB_ACCEL_REDIRECT_PREFIX = env("GENHUB_ACCEL_REDIRECT_PREFIX", default="")

# --- spend control ---
# Monthly cap across both providers (USD, unset = none). fal jobs count their price; vast instances their
# whole billed time. When spend reaches it, new work pauses; running work finishes.
GENHUB_MONTHLY_BUDGET_USD = env("GENHUB_MONTHLY_BUDGET_USD", default=None)
if GENHUB_MONTHLY_BUDGET_USD is not None:
    GENHUB_MONTHLY_BUDGET_USD = Decimal(GENHUB_MONTHLY_BUDGET_USD)
# Destroy the GPU after this many idle minutes with no vastai job waiting or running (0 = never: the
# instance is persistent by default).
GENHUB_IDLE_SHUTDOWN_MINUTES = env.float("GENHUB_IDLE_SHUTDOWN_MINUTES", default=0)
# Alerts: the GPU unavailable this long while vastai jobs wait; a batch with no progress this long.
GENHUB_ALERT_INSTANCE_DOWN_MINUTES = env.float("GENHUB_ALERT_INSTANCE_DOWN_MINUTES", default=15)
GENHUB_ALERT_STALLED_MINUTES = env.float("GENHUB_ALERT_STALLED_MINUTES", default=30)
# Alerts are POSTed here as JSON, signed with HMAC-SHA256 of "<timestamp>.<body>" under the secret.
GENHUB_ALERT_WEBHOOK_URL = env("GENHUB_ALERT_WEBHOOK_URL", default="")
GENHUB_ALERT_WEBHOOK_SECRET = env("GENHUB_ALERT_WEBHOOK_SECRET", default="")
GENHUB_ALERT_WEBHOOK_TIMEOUT = env.float("GENHUB_ALERT_WEBHOOK_TIMEOUT", default=5)
GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS = env.int("GENHUB_ALERT_WEBHOOK_MAX_ATTEMPTS", default=5)

# --- paid results and a small fal account (issue 9, items 8-9) ---
# A clip that was paid for but could not be stored (full disk, storage error) is spooled here and stored
# later, never generated again. Put it on another disk than MEDIA_ROOT if you can; unset = a
# `<MEDIA_ROOT>-pending` directory beside MEDIA_ROOT. fal results are also re-fetched from fal's URL.
GENHUB_PENDING_RESULTS_DIR = env("GENHUB_PENDING_RESULTS_DIR", default="")
# How often a kept result is tried again, and the free space MEDIA_ROOT needs before new paid work starts.
GENHUB_STORE_RETRY_SECONDS = env.float("GENHUB_STORE_RETRY_SECONDS", default=30)
GENHUB_STORAGE_MIN_FREE_MB = env.int("GENHUB_STORAGE_MIN_FREE_MB", default=200)
# A COMPLETED fal request whose result cannot be fetched (5xx, timeout) is fetched again this many times,
# backing off from this many seconds (doubling, at most 5 min), then fails (billed); it is never resubmitted.
FAL_RESULT_FETCH_TRIES = env.int("FAL_RESULT_FETCH_TRIES", default=6)
FAL_RESULT_FETCH_BACKOFF_SECONDS = env.float("FAL_RESULT_FETCH_BACKOFF_SECONDS", default=5)

# --- control loops (issue 9): leases, the vast offer search and slow creates ---
# Term of the database leases that keep one pump / one reconcile running; the holder renews every third of
# it, so a holder that died lets go within this long.
GENHUB_LEASE_SECONDS = env.float("GENHUB_LEASE_SECONDS", default=15)
# An offer list is reused this long, so reconcile does not spend vast's search quota on every step.
VAST_OFFER_CACHE_SECONDS = env.float("VAST_OFFER_CACHE_SECONDS", default=60)
# Read timeout of a create (vast's own client waits 120 s); an unanswered create is resolved by looking for
# the instance it may have made, for up to VAST_CREATE_RESOLVE_SECONDS after it was sent.
VAST_CREATE_TIMEOUT_SECONDS = env.float("VAST_CREATE_TIMEOUT_SECONDS", default=120)
VAST_CREATE_RESOLVE_SECONDS = env.float("VAST_CREATE_RESOLVE_SECONDS", default=300)

# --- planning the batch (issue 12, items 4-6): ETA, deadlines, batch webhooks ---
# Boot time assumed before genhub has seen an instance become ready (then: the median of past boots).
GENHUB_BOOT_ESTIMATE_SECONDS = env.float("GENHUB_BOOT_ESTIMATE_SECONDS", default=600)
# The deadline planner aims to finish this long before a batch's deadline (polls, store, a late clip).
GENHUB_DEADLINE_MARGIN_SECONDS = env.float("GENHUB_DEADLINE_MARGIN_SECONDS", default=120)
# Batch webhooks must be https; plain http only with this (on by default when DEBUG).
GENHUB_WEBHOOK_ALLOW_HTTP = env.bool("GENHUB_WEBHOOK_ALLOW_HTTP", default=DEBUG)
# Loopback, private and link-local webhook addresses are refused unless GENHUB_ALLOW_PRIVATE_DOWNLOADS is on
# (the same switch as the download address rules, above).

# --- images by URL and appending to a batch (issue 13, item 3) ---
# Items may name their image by `image_url` (https://, or s3://<AWS_STORAGE_BUCKET_NAME>/<key>); genhub
# fetches them in the background with the address rule above (GENHUB_ALLOW_PRIVATE_DOWNLOADS) and the
# upload checks (GENHUB_MAX_IMAGE_BYTES, decode). Plain http:// only when this is on (development).
GENHUB_IMAGE_URL_ALLOW_HTTP = env.bool("GENHUB_IMAGE_URL_ALLOW_HTTP", default=DEBUG)
# Images fetched at once (one fetcher per deployment, under a lease, with this many threads).
GENHUB_IMAGE_FETCH_CONCURRENCY = env.int("GENHUB_IMAGE_FETCH_CONCURRENCY", default=8)
# The most one image may take, from its first connect to its last byte (seconds); also the read timeout.
GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS = env.float("GENHUB_IMAGE_FETCH_TIMEOUT_SECONDS", default=30)
# Redirects followed per image; each hop is checked against the address rule before it is requested.
GENHUB_IMAGE_FETCH_MAX_REDIRECTS = env.int("GENHUB_IMAGE_FETCH_MAX_REDIRECTS", default=5)
