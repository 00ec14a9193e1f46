"""The TLS identity of one GPU instance, made by genhub, and the pin that checks it.

For every instance genhub generates an EC P-256 key and a self-signed certificate for it, hands both
to the container in its environment (vast allows 256 characters per entry, so the certificate is
split into numbered parts) and keeps only the certificate. Every HTTPS and WSS call to the instance
then trusts that one certificate and nothing else: no CA bundle, no hostname (the certificate cannot
name an IP that vast assigns after the create request), and — for requests — the exact SHA-256
fingerprint as well. A certificate made by anyone else fails the TLS handshake, before a byte of the
request (and its `Authorization` token) is sent.

genhub never stores the private key: it is needed only by the instance, and a key that is not kept
cannot leak from the database, the admin or a log.
"""

import base64
import binascii
import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.swarmui_contract import TLS_CERT_ENV_PREFIX, TLS_ENV_CHUNK, TLS_KEY_ENV, TLS_SERVER_NAME

COMMON_NAME = TLS_SERVER_NAME
# The certificate dies with its instance (a new instance gets a new one), so only an instance kept for
# years would outlive it; nothing else depends on the date.
VALIDITY = timedelta(days=3650)


class TLSMaterialError(ValueError):
    """A certificate or key that cannot be used (bad encoding, missing parts, not a pair)."""


@dataclass(frozen=True)
class InstanceTLS:
    certificate_pem: str
    private_key_pem: str = field(repr=False)  # a secret of the instance: never in a repr or a log

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate_pem)


def generate(common_name: str = COMMON_NAME) -> InstanceTLS:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    no_usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                    key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))  # the instance's clock may be behind ours
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, **no_usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return InstanceTLS(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        private_key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode("ascii"),
    )


def fingerprint(certificate_pem: str) -> str:
    """SHA-256 of the certificate's DER, lowercase hex (what urllib3's `assert_fingerprint` compares)."""
    return hashlib.sha256(_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)).hexdigest()


# --- the create request's environment ---------------------------------------------------------

def env_entries(tls: InstanceTLS) -> dict[str, str]:
    """The env entries that carry the key and certificate to the container (base64 DER, split)."""
    key_der = serialization.load_pem_private_key(tls.private_key_pem.encode(), password=None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_b64 = base64.b64encode(_certificate(tls.certificate_pem).public_bytes(serialization.Encoding.DER)).decode()
    entries = {TLS_KEY_ENV: base64.b64encode(key_der).decode()}
    for index, start in enumerate(range(0, len(cert_b64), TLS_ENV_CHUNK), 1):
        entries[f"{TLS_CERT_ENV_PREFIX}{index}"] = cert_b64[start:start + TLS_ENV_CHUNK]
    return entries


def from_env(env: dict) -> InstanceTLS:
    """The inverse of `env_entries`, as the container does it (parts _1, _2, … until one is missing)."""
    parts, index = [], 1
    while f"{TLS_CERT_ENV_PREFIX}{index}" in env:
        parts.append(env[f"{TLS_CERT_ENV_PREFIX}{index}"])
        index += 1
    if not parts or not env.get(TLS_KEY_ENV):
        raise TLSMaterialError(f"{TLS_KEY_ENV} and {TLS_CERT_ENV_PREFIX}1… must be set")
    try:
        certificate = x509.load_der_x509_certificate(base64.b64decode("".join(parts), validate=True))
        key = serialization.load_der_private_key(base64.b64decode(env[TLS_KEY_ENV], validate=True), password=None)
    except (ValueError, binascii.Error) as exc:
        raise TLSMaterialError(f"the TLS key or certificate in the environment does not decode: {exc}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise TLSMaterialError("the TLS key does not belong to the certificate")
    return InstanceTLS(
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        private_key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode("ascii"),
    )


# --- SSL contexts -------------------------------------------------------------------------------

def client_context(certificate_pem: str) -> ssl.SSLContext:
    """Trusts exactly this certificate. No hostname check: the pin, not a name, identifies the instance."""
    _certificate(certificate_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=certificate_pem)
    return context


def server_context(tls: InstanceTLS) -> ssl.SSLContext:
    """For the simulated instance: serve this key and certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 0  # as the image's nginx (`NumTickets 0`): see docker/swarmui/nginx.conf.template
    # load_cert_chain reads files only; the key exists on disk just for this call.
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_path, "w") as handle:
            handle.write(tls.certificate_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(tls.private_key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context


def _certificate(certificate_pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, AttributeError) as exc:
        raise TLSMaterialError(f"not a PEM certificate: {exc}") from None
