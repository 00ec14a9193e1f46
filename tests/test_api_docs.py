"""The interactive API docs come from genhub's own static files, so they work without internet."""

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def referenced_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


def test_the_api_docs_reference_only_local_static_files_and_they_are_served(admin_user, settings):
    # Redoc is not exposed: its page loads web fonts from Google.
    page = "/api/docs/"
    # As after `collectstatic`: WhiteNoise serves the app's static files (here straight from the finders).
    settings.WHITENOISE_USE_FINDERS = True
    client = Client()
    client.force_login(admin_user)

    response = client.get(page)

    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower() and "@latest" not in html
    urls = referenced_urls(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, html
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
    for url in urls:
        if url.startswith(settings.STATIC_URL) or url.startswith("/" + settings.STATIC_URL):
            asset = client.get(url if url.startswith("/") else "/" + url)
            assert asset.status_code == 200, url
            assert b"".join(asset.streaming_content if asset.streaming else [asset.content])
