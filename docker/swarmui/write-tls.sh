#!/usr/bin/env bash
# Writes the instance's TLS key and certificate, made by genhub, from the environment into DIR.
#
#   write-tls.sh DIR
#
# GENHUB_TLS_KEY is the PKCS#8 key and GENHUB_TLS_CERT_1, _2, … the certificate, both base64 DER (no PEM
# armour, split because vast allows 256 characters per env entry; providers/instance_tls.py). genhub pins
# exactly this certificate, so the instance never makes its own. Nothing secret is printed.
set -euo pipefail
export LC_ALL=C

dir="${1:?usage: write-tls.sh DIR}"

die() {
    printf 'write-tls: ERROR: %s\n' "$*" >&2
    exit 1
}

[ -n "${GENHUB_TLS_KEY:-}" ] || die "GENHUB_TLS_KEY is not set: genhub passes the instance's TLS key in its env"
cert_b64=""
part=1
while :; do
    name="GENHUB_TLS_CERT_${part}"
    [ -n "${!name:-}" ] || break
    cert_b64+="${!name}"
    part=$((part + 1))
done
[ -n "$cert_b64" ] || die "GENHUB_TLS_CERT_1 is not set: genhub passes the instance's certificate in its env"
b64='^[A-Za-z0-9+/]+=*$'
if ! [[ "$cert_b64" =~ $b64 ]] || ! [[ "$GENHUB_TLS_KEY" =~ $b64 ]]; then
    die "the TLS key or certificate is not base64"
fi

pem() {  # LABEL BASE64 -> PEM on stdout
    printf -- '-----BEGIN %s-----\n' "$1"
    printf '%s' "$2" | fold -w 64
    printf '\n-----END %s-----\n' "$1"
}

umask 077
mkdir -p "$dir"
pem "PRIVATE KEY" "$GENHUB_TLS_KEY" >"$dir/key.pem"
pem "CERTIFICATE" "$cert_b64" >"$dir/cert.pem"
chmod 0644 "$dir/cert.pem"
openssl x509 -in "$dir/cert.pem" -noout 2>/dev/null || die "GENHUB_TLS_CERT_* is not a certificate"
key_pub="$(openssl pkey -in "$dir/key.pem" -pubout 2>/dev/null)" || die "GENHUB_TLS_KEY is not a private key"
cert_pub="$(openssl x509 -in "$dir/cert.pem" -noout -pubkey)"
[ "$key_pub" = "$cert_pub" ] || die "GENHUB_TLS_KEY does not belong to the certificate"
