#!/usr/bin/env bash
# Container entrypoint: per-instance auth token in, SwarmUI headless out, logs on stdout.
#
# - SWARMUI_AUTH_TOKEN (required) becomes SwarmUI's Network.RequiredAuthorization; the variable is
#   removed from the environment before SwarmUI (and ComfyUI under it) starts, and never printed.
# - SwarmUI exits 42 to ask for a restart (settings/backends changes, RestartOnGpuCriticalError):
#   it is started again here, with freshly rendered settings.
# - Once SwarmUI answers, a request without the header from a non-loopback address must get 401.
#   If it does not (e.g. SwarmUI could not parse Settings.fds and fell back to defaults), the
#   container stops rather than serve an open GPU to the internet.
# - Extra container arguments (vast.ai `args`) are passed on to SwarmUI.
set -euo pipefail

# Both directories are fixed in the image; the overrides let the test suite run this script as is.
readonly swarm_dir="${SWARMUI_DIR:-/SwarmUI}"
readonly seed_dir="${SWARMUI_SEED_DIR:-/opt/genhub/swarmui}"
readonly port=7801
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

cd "$swarm_dir"
mkdir -p Data Output
if [ ! -f Data/Backends.fds ]; then
    cp "$seed_dir/Backends.fds" Data/Backends.fds
fi

# The auth gate is one exact string comparison in SwarmUI; verify it from outside loopback, which
# the gate lets through unchecked.
auth_selfcheck() {
    local pid="$1" code="" addr=""
    local deadline=$((SECONDS + 900))
    sleep 2
    while kill -0 "$pid" 2>/dev/null; do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:${port}/" || true)"
        if [ "$code" != "000" ]; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "WARNING: SwarmUI did not answer on port ${port} within 15 minutes; auth self-check skipped"
            return 0
        fi
        sleep 2
    done
    kill -0 "$pid" 2>/dev/null || return 0
    for addr in $(hostname -I 2>/dev/null || true); do
        case "$addr" in 127.* | ::1 | *:*) continue ;; esac
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://${addr}:${port}/" || true)"
        if [ "$code" = "401" ]; then
            log "auth self-check: requests without the token are refused (${addr})"
            return 0
        fi
        log "FATAL: SwarmUI answered HTTP ${code} to a request without the token on ${addr}; stopping it" >&2
        touch "$state_dir/auth-failed"
        kill -TERM "$pid" 2>/dev/null || true
        return 0
    done
    log "WARNING: no non-loopback address to run the auth self-check from"
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

while :; do
    printf '%s' "$token" | bash "$seed_dir/render-settings.sh" "$seed_dir/Settings.fds" Data/Settings.fds
    log "starting SwarmUI on 0.0.0.0:${port}"
    dotnet src/bin/live_release/SwarmUI.dll --launch_mode none --host 0.0.0.0 --port "$port" "$@" &
    swarm_pid=$!
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
    if [ -e "$state_dir/auth-failed" ]; then
        exit 70
    fi
    if [ "$stopping" = 1 ]; then
        log "SwarmUI stopped (exit ${code})"
        exit 0
    fi
    if [ "$code" != "$restart_code" ]; then
        log "SwarmUI exited with code ${code}"
        exit "$code"
    fi
    log "SwarmUI asked for a restart (exit ${restart_code}); restarting"
done
