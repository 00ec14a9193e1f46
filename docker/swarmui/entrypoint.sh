#!/usr/bin/env bash
# Container entrypoint: per-instance secrets in, SwarmUI headless behind a pinned TLS terminator out,
# logs on stdout.
#
# - SWARMUI_AUTH_TOKEN (required) becomes SwarmUI's Network.RequiredAuthorization and the token the
#   TLS terminator demands; GENHUB_TLS_KEY and GENHUB_TLS_CERT_1… (required) are the key and the
#   certificate genhub made for this instance and pins. All are removed from the environment before
#   SwarmUI (and ComfyUI under it) starts, and never printed.
# - SwarmUI listens on 127.0.0.1:7800 only. nginx (render-proxy.sh) owns the mapped port 7801: TLS with
#   that certificate, the token check (SwarmUI lets loopback requests past its own), and a proxy for
#   HTTP and WebSocket. If nginx stops, the container stops: there is no unencrypted way in.
# - SwarmUI exits 42 to ask for a restart (settings/backends changes, RestartOnGpuCriticalError):
#   it is started again here, with freshly rendered settings.
# - Once the port answers, a request without the token must get 401 through it. If it does not, the
#   container stops rather than serve an open GPU to the internet.
# - Extra container arguments (vast.ai `args`) are passed on to SwarmUI.
set -euo pipefail

# Both directories are fixed in the image; the overrides let the test suite run this script as is.
readonly swarm_dir="${SWARMUI_DIR:-/SwarmUI}"
readonly seed_dir="${SWARMUI_SEED_DIR:-/opt/genhub/swarmui}"
readonly nginx_bin="${GENHUB_NGINX:-/usr/sbin/nginx}"
readonly port=7801
readonly swarm_port=7800
readonly tls_name=genhub-gpu-instance
readonly restart_code=42

log() {
    printf '[genhub-entrypoint] %s\n' "$*"
}

token="${SWARMUI_AUTH_TOKEN:-}"
unset SWARMUI_AUTH_TOKEN
if [ -z "$token" ]; then
    log "ERROR: SWARMUI_AUTH_TOKEN is not set; refusing to start SwarmUI without an access token." >&2
    exit 64
fi

# The proxy's run directory: its config (with the token), the key, the certificate. Private to this user.
run_dir="$(mktemp -d /tmp/genhub-proxy.XXXXXX)"
if ! bash "$seed_dir/write-tls.sh" "$run_dir"; then
    log "ERROR: no usable TLS key and certificate from genhub; refusing to serve without encryption." >&2
    exit 65
fi
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep '^GENHUB_TLS_' || true)
printf '%s' "$token" | bash "$seed_dir/render-proxy.sh" "$seed_dir/nginx.conf.template" "$run_dir" "$port" "$swarm_port"

cd "$swarm_dir"
mkdir -p Data Output
if [ ! -f Data/Backends.fds ]; then
    cp "$seed_dir/Backends.fds" Data/Backends.fds
fi

# The gate is the proxy's exact comparison of the header: prove it from outside SwarmUI, through the
# port genhub uses, over TLS checked against the instance's own certificate.
auth_selfcheck() {
    local pid="$1" code=""
    local deadline=$((SECONDS + 900))
    sleep 2
    while kill -0 "$pid" 2>/dev/null; do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$run_dir/cert.pem" \
            --resolve "${tls_name}:${port}:127.0.0.1" "https://${tls_name}:${port}/" || true)"
        # 000: nothing answers yet; 502: a proxy answers but SwarmUI does not yet (only an open proxy says so).
        if [ "$code" != "000" ] && [ "$code" != "502" ]; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "WARNING: port ${port} did not answer within 15 minutes; auth self-check skipped"
            return 0
        fi
        sleep 2
    done
    kill -0 "$pid" 2>/dev/null || return 0
    if [ "$code" = "401" ]; then
        log "auth self-check: requests without the token are refused on port ${port}"
        return 0
    fi
    log "FATAL: port ${port} answered HTTP ${code} to a request without the token; stopping SwarmUI" >&2
    touch "$state_dir/auth-failed"
    kill -TERM "$pid" 2>/dev/null || true
}

state_dir="$(mktemp -d)"
swarm_pid=""
stopping=0
on_signal() {
    stopping=1
    if [ -n "$swarm_pid" ]; then
        kill -TERM "$swarm_pid" 2>/dev/null || true
    fi
}
trap on_signal TERM INT

log "starting the TLS terminator on 0.0.0.0:${port}"
"$nginx_bin" -p "$run_dir" -c "$run_dir/nginx.conf" -e stderr -g 'daemon off;' &
nginx_pid=$!
stop_proxy() {
    kill -TERM "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    rm -rf "$run_dir"
}
trap stop_proxy EXIT
# Without its proxy SwarmUI is unreachable and unchecked: stop it too.
proxy_watch() {
    while kill -0 "$nginx_pid" 2>/dev/null; do
        sleep 2
    done
    if [ -n "$(cat "$state_dir/swarm.pid" 2>/dev/null)" ]; then
        log "FATAL: the TLS terminator stopped; stopping SwarmUI" >&2
        touch "$state_dir/proxy-failed"
        kill -TERM "$(cat "$state_dir/swarm.pid")" 2>/dev/null || true
    fi
}
proxy_watch &
watch_pid=$!

while :; do
    printf '%s' "$token" | bash "$seed_dir/render-settings.sh" "$seed_dir/Settings.fds" Data/Settings.fds
    log "starting SwarmUI on 127.0.0.1:${swarm_port}"
    dotnet src/bin/live_release/SwarmUI.dll --launch_mode none --host 127.0.0.1 --port "$swarm_port" "$@" &
    swarm_pid=$!
    printf '%s' "$swarm_pid" >"$state_dir/swarm.pid"
    auth_selfcheck "$swarm_pid" &
    check_pid=$!
    code=0
    wait "$swarm_pid" || code=$?
    # `wait` also returns when a trapped signal arrives; then wait on until SwarmUI is really gone.
    while kill -0 "$swarm_pid" 2>/dev/null; do
        code=0
        wait "$swarm_pid" || code=$?
    done
    kill "$check_pid" 2>/dev/null || true
    wait "$check_pid" 2>/dev/null || true
    swarm_pid=""
    : >"$state_dir/swarm.pid"
    if [ -e "$state_dir/auth-failed" ]; then
        exit 70
    fi
    if [ -e "$state_dir/proxy-failed" ] || ! kill -0 "$nginx_pid" 2>/dev/null; then
        kill "$watch_pid" 2>/dev/null || true
        exit 71
    fi
    if [ "$stopping" = 1 ]; then
        log "SwarmUI stopped (exit ${code})"
        kill "$watch_pid" 2>/dev/null || true
        exit 0
    fi
    if [ "$code" != "$restart_code" ]; then
        log "SwarmUI exited with code ${code}"
        kill "$watch_pid" 2>/dev/null || true
        exit "$code"
    fi
    log "SwarmUI asked for a restart (exit ${restart_code}); restarting"
done
