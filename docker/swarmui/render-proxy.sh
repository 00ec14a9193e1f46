#!/usr/bin/env bash
# Writes the TLS terminator's nginx.conf into RUN_DIR, with the token in its auth check.
#
#   printf '%s' "$token" | render-proxy.sh TEMPLATE RUN_DIR LISTEN_PORT UPSTREAM_PORT
#
# RUN_DIR already holds cert.pem and key.pem (write-tls.sh). The token comes on stdin, never in argv,
# and is never printed. nginx config strings have their own escapes and `$` variables, so only
# characters that need none are accepted (genhub's tokens are URL-safe base64).
set -euo pipefail
export LC_ALL=C

usage="usage: render-proxy.sh TEMPLATE RUN_DIR LISTEN_PORT UPSTREAM_PORT (token on stdin)"
template="${1:?$usage}"
run_dir="${2:?$usage}"
listen_port="${3:?$usage}"
upstream_port="${4:?$usage}"

die() {
    printf 'render-proxy: ERROR: %s\n' "$*" >&2
    exit 1
}

IFS= read -r token || [ -n "$token" ] || die "no token on stdin"
if [ "${#token}" -lt 16 ] || [ "${#token}" -gt 4096 ]; then
    die "the token must be 16 to 4096 characters long"
fi
safe_token='^[A-Za-z0-9._+/=-]+( [A-Za-z0-9._+/=-]+)?$'
if ! [[ "$token" =~ $safe_token ]]; then
    die "the token may hold only letters, digits and . _ + / = - (and one inner space, as in 'Bearer x')"
fi
port_pattern='^[0-9]{1,5}$'
for port in "$listen_port" "$upstream_port"; do
    [[ "$port" =~ $port_pattern ]] || die "not a port: ${port}"
done
[ -f "$template" ] || die "template ${template} not found"
if [ ! -s "$run_dir/cert.pem" ] || [ ! -s "$run_dir/key.pem" ]; then
    die "${run_dir} lacks cert.pem/key.pem"
fi
case "$run_dir" in
    *[!A-Za-z0-9._/-]*) die "RUN_DIR must be a plain path" ;;
esac

umask 077
tmp="$(mktemp "${run_dir}/nginx.conf.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    line="${line//@RUN_DIR@/$run_dir}"
    line="${line//@LISTEN_PORT@/$listen_port}"
    line="${line//@UPSTREAM_PORT@/$upstream_port}"
    line="${line//@TOKEN@/$token}"
    printf '%s\n' "$line"
done <"$template" >"$tmp"
mv -f "$tmp" "$run_dir/nginx.conf"
trap - EXIT
