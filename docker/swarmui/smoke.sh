#!/usr/bin/env bash
# Smoke test of a freshly built genhub SwarmUI image, run on a GPU host with Docker and the NVIDIA
# container toolkit:
#
#   docker/swarmui/smoke.sh [IMAGE]        (default: $SWARMUI_IMAGE, else genhub-swarmui:latest)
#
# Starts the container with a random token and a fresh key and self-signed certificate (passed the way
# genhub passes them, providers/instance_tls.py), talks to it only over TLS pinned to that certificate,
# waits until the ComfyUI backend is running, checks
# that requests without the token are refused, that the contract's models and LoRA are listed,
# generates short image-to-video clip(s) through the API, fetches them, prints the time per clip,
# and checks the token never appeared in the container's logs. The container is removed on exit.
#
# Environment: SMOKE_PORT (7801), SMOKE_GPUS (all), SMOKE_READY_TIMEOUT seconds (1800),
# SMOKE_FRAMES (33), SMOKE_CLIPS (1; the first clip includes model loading), SMOKE_MODEL
# (default: the contract's VIDEO_MODEL), SMOKE_OUT_DIR (default: a new directory under /tmp),
# SMOKE_KEEP=1 to leave the container running for inspection.
set -euo pipefail

image="${1:-${SWARMUI_IMAGE:-genhub-swarmui:latest}}"
port="${SMOKE_PORT:-7801}"
gpus="${SMOKE_GPUS:-all}"
ready_timeout="${SMOKE_READY_TIMEOUT:-1800}"
frames="${SMOKE_FRAMES:-33}"
clips="${SMOKE_CLIPS:-1}"
model="${SMOKE_MODEL:-}"
out_dir="${SMOKE_OUT_DIR:-$(mktemp -d -t genhub-smoke.XXXXXX)}"
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"

say() {
    printf '[smoke] %s\n' "$*"
}

for tool in docker python3 od openssl; do
    command -v "$tool" >/dev/null || { say "ERROR: ${tool} is required" >&2; exit 1; }
done

SWARMUI_AUTH_TOKEN="$(od -An -N 24 -tx1 /dev/urandom | tr -d ' \n')"
export SWARMUI_AUTH_TOKEN
name="genhub-swarmui-smoke-$$"
session_file="$(mktemp)"
tls_dir="$(mktemp -d)"
# As genhub does: an EC P-256 key and a self-signed certificate, both as base64 DER in env entries of at
# most 256 characters (the certificate split into GENHUB_TLS_CERT_1, _2, …).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=genhub-gpu-instance" \
    -addext "subjectAltName=DNS:genhub-gpu-instance" -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
GENHUB_TLS_KEY="$(openssl pkey -in "$tls_dir/key.pem" -outform DER | base64 -w0)"
export GENHUB_TLS_KEY
tls_env=(-e GENHUB_TLS_KEY)
cert_b64="$(openssl x509 -in "$tls_dir/cert.pem" -outform DER | base64 -w0)"
part=1
while [ -n "$cert_b64" ]; do
    export "GENHUB_TLS_CERT_${part}=${cert_b64:0:200}"
    tls_env+=(-e "GENHUB_TLS_CERT_${part}")
    cert_b64="${cert_b64:200}"
    part=$((part + 1))
done
client=(python3 "$here/smoke_client.py" --base-url "https://127.0.0.1:${port}" --cert "$tls_dir/cert.pem"
    --session-file "$session_file")

container_logs() {
    docker logs "$name" 2>&1 | sed "s/${SWARMUI_AUTH_TOKEN}/<token>/g"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] && docker inspect "$name" >/dev/null 2>&1; then
        say "FAILED; last 150 lines of the container log:" >&2
        container_logs | tail -n 150 >&2
    fi
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        say "container ${name} left running (SMOKE_KEEP=1); remove it with: docker rm -f ${name}"
        say "its token: docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' ${name} | grep ^SWARMUI_AUTH_TOKEN="
    else
        docker rm -f "$name" >/dev/null 2>&1 || true
    fi
    rm -f "$session_file"
    rm -rf "$tls_dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting ${image} as ${name} on 127.0.0.1:${port}"
# -e NAME without a value hands the token and key over from this environment, keeping them out of argv.
docker run --detach --name "$name" --gpus "$gpus" -p "127.0.0.1:${port}:7801" \
    -e SWARMUI_AUTH_TOKEN "${tls_env[@]}" "$image" >/dev/null

started=$SECONDS
say "waiting for the ComfyUI backend (up to ${ready_timeout}s)"
while :; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != "true" ]; then
        say "ERROR: the container stopped (exit code $(docker inspect -f '{{.State.ExitCode}}' "$name"))" >&2
        exit 1
    fi
    rc=0
    status="$("${client[@]}" probe 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
        say "$status after $((SECONDS - started))s"
        break
    fi
    if [ "$rc" -ne 3 ]; then
        say "ERROR: $status" >&2
        exit 1
    fi
    if [ $((SECONDS - started)) -ge "$ready_timeout" ]; then
        say "ERROR: not ready after ${ready_timeout}s; last status: $status" >&2
        exit 1
    fi
    sleep 10
done

"${client[@]}" check-auth
"${client[@]}" check-models
generate=("${client[@]}" generate --frames "$frames" --clips "$clips" --out-dir "$out_dir")
if [ -n "$model" ]; then
    generate+=(--model "$model")
fi
"${generate[@]}"

if docker logs "$name" 2>&1 | grep -qF -- "$SWARMUI_AUTH_TOKEN"; then
    say "ERROR: the token appears in the container log" >&2
    exit 1
fi
if docker logs "$name" 2>&1 | grep -qF -- "${GENHUB_TLS_KEY:0:40}"; then
    say "ERROR: the TLS key appears in the container log" >&2
    exit 1
fi
say "token and key never logged"
say "SMOKE TEST PASSED (${image}); clips in ${out_dir}"
