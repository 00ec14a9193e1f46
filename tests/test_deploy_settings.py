"""Production settings (issue 10): the README's production environment passes `check --deploy`, and
the secure defaults hold with DEBUG=0 while development (DEBUG=1) and the test suite stay on plain HTTP."""

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
SECURITY = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
            "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER")


def readme_production_environment() -> dict:
    """The `DEBUG=0` block of README's "Running it for real", placeholders filled in."""
    section = (ROOT / "README.md").read_text().split("## Running it for real", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "DEBUG=0" in b)
    environment = {}
    for line in block.splitlines():
        name, _, value = line.strip().partition("=")
        if name and not name.startswith("#"):
            environment[name] = value
    if environment.get("SECRET_KEY", "").startswith("<"):
        environment["SECRET_KEY"] = secrets.token_urlsafe(64)
    return environment


def run_manage(*args, **environment) -> subprocess.CompletedProcess:
    """manage.py in a fresh process with only `environment` (plus a path and the suite's database)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/genhub"),
           **environment}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def settings_in(**environment) -> dict:
    code = ("import json; from django.conf import settings; "
            f"print(json.dumps({{n: getattr(settings, n) for n in {SECURITY!r}}}))")
    result = run_manage("shell", "-c", code, **environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_readme_production_environment_passes_check_deploy_with_no_warning():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **readme_production_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_with_debug_off_cookies_are_secure_and_https_enforced_unless_turned_off():
    environment = readme_production_environment()

    secure = settings_in(**environment)
    relaxed = settings_in(**environment, SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="false",
                          SECURE_HSTS_SECONDS="0")

    assert secure == {"SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SECURE_SSL_REDIRECT": True,
                      "SECURE_HSTS_SECONDS": 31536000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
                      "SECURE_HSTS_PRELOAD": False, "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    assert (relaxed["SECURE_SSL_REDIRECT"], relaxed["SESSION_COOKIE_SECURE"], relaxed["SECURE_HSTS_SECONDS"]) == (
        False, False, 0)
    assert relaxed["CSRF_COOKIE_SECURE"] is True  # only what was turned off is off


def test_development_with_debug_on_stays_on_plain_http():
    development = settings_in(DEBUG="1", SECRET_KEY="dev")

    assert not any(development[name] for name in SECURITY)


def test_a_malformed_proxy_header_setting_is_refused_at_startup():
    result = run_manage("check", DEBUG="1", SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO")

    assert result.returncode != 0 and "SECURE_PROXY_SSL_HEADER is 'HEADER,value'" in result.stderr


def test_the_test_suite_runs_on_plain_http():
    assert not settings.SECURE_SSL_REDIRECT and not settings.SESSION_COOKIE_SECURE and not settings.SECURE_HSTS_SECONDS
