"""Where genhub's HTTP may go when a remote party chose the address (part of the HTTP seam, `http.py`).

A provider's reply is untrusted input: a fal result can name any URL, a vast instance row any IP. The
rule, in one place for every client that follows such an address:

- `check_url`: the scheme is https (http only when GENHUB_ALLOW_PRIVATE_DOWNLOADS, for the local
  simulators), the host is one the caller expects, and no credentials ride in the URL;
- `GuardedAdapter`: every connection is checked *after* it is made, on the peer address the socket
  really reached, before TLS and before a byte of the request is sent. Checking the name, or the
  addresses a lookup returned, would let DNS answer differently between the check and the connect
  (rebinding); the connected socket cannot. Loopback, private, link-local, shared, reserved and
  multicast addresses are refused unless GENHUB_ALLOW_PRIVATE_DOWNLOADS is on.
- with a pinned certificate the adapter trusts exactly that certificate (`instance_tls.client_context`
  plus urllib3's fingerprint check) and never a CA bundle.
"""

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from providers.errors import PermanentError


class UntrustedAddress(PermanentError):
    """A reply pointed genhub at an address it must not call. Nothing was sent there."""

    def __init__(self, message: str):
        super().__init__(message, code="untrusted_address")


def private_allowed() -> bool:
    return bool(settings.GENHUB_ALLOW_PRIVATE_DOWNLOADS)


def is_public(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_peer(ip: str, host: str) -> None:
    if not private_allowed() and not is_public(ip):
        raise UntrustedAddress(f"refused to connect to {host}: it resolves to {ip}, a loopback, private or "
                               "link-local address (GENHUB_ALLOW_PRIVATE_DOWNLOADS is off)")


def host_matches(host: str, patterns) -> bool:
    """`patterns`: exact host names, or `*.example.com` for any subdomain of example.com."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
        if host == pattern:
            return True
    return False


def check_url(url, *, what: str, allowed_hosts=None, allow_http: bool | None = None) -> str:
    """Raises UntrustedAddress unless `url` may be fetched; returns it. `what` names it in the error.

    `allow_http`: whether plain http is accepted; by default only when private addresses are."""
    if not isinstance(url, str) or not url:
        raise UntrustedAddress(f"{what}: not a URL")
    parts = urlsplit(url)
    allow_http = private_allowed() if allow_http is None else allow_http
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UntrustedAddress(f"{what}: scheme {parts.scheme or '(none)'!r} refused; only {' or '.join(schemes)}")
    if not parts.hostname:
        raise UntrustedAddress(f"{what}: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UntrustedAddress(f"{what}: URLs carrying credentials are refused")
    try:
        parts.port  # noqa: B018 — raises on a malformed port
    except ValueError:
        raise UntrustedAddress(f"{what}: malformed port") from None
    if allowed_hosts is not None and not host_matches(parts.hostname, allowed_hosts):
        raise UntrustedAddress(f"{what}: host {parts.hostname} is not one genhub fetches from "
                               f"({', '.join(allowed_hosts) or 'none configured'})")
    try:
        check_peer(parts.hostname, parts.hostname)  # an IP literal is refused before any connect
    except ValueError:
        pass  # a name: its addresses are checked when connected
    return url


class _PeerChecked:
    """Mixin for urllib3 connections: the connected peer is checked before anything is sent on it."""

    def _new_conn(self):
        sock = super()._new_conn()
        try:
            check_peer(sock.getpeername()[0], self.host)
        except BaseException:
            sock.close()
            raise
        return sock


class _CheckedHTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    def __init__(self, *, public_only: bool, pinned_certificate: str | None = None):
        self.public_only = public_only
        self.pinned_certificate = pinned_certificate
        if pinned_certificate:
            from providers import instance_tls

            self._context = instance_tls.client_context(pinned_certificate)
            self._fingerprint = instance_tls.fingerprint(pinned_certificate)
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        if self.public_only:
            self.poolmanager.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if self.pinned_certificate:
            # Only the pinned certificate is trusted, whatever `verify` says: never a CA, never CERT_NONE.
            pool_kwargs = {"ssl_context": self._context, "cert_reqs": "CERT_REQUIRED",
                           "assert_fingerprint": self._fingerprint}
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert):
        if not self.pinned_certificate:
            return super().cert_verify(conn, url, verify, cert)
        # requests would add its CA bundle to the pool (and so to the pinned context): it must not.
        conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None
