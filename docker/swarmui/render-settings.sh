#!/usr/bin/env bash
# Writes SwarmUI's Data/Settings.fds: the seed plus Network.RequiredAuthorization = the token.
#
#   printf '%s' "$token" | render-settings.sh SEED OUT
#
# The token comes on stdin so it is never in argv or the environment of another process, and it
# is never printed. SwarmUI then demands an `Authorization` header equal to it on every request
# (src/Core/WebServer.cs), except from AuthBypassIPs (loopback: the HEALTHCHECK).
set -euo pipefail
# Byte-wise character classes below, whatever the container's locale.
export LC_ALL=C

seed="${1:?usage: render-settings.sh SEED OUT (token on stdin)}"
out="${2:?usage: render-settings.sh SEED OUT (token on stdin)}"

die() {
    printf 'render-settings: ERROR: %s\n' "$*" >&2
    exit 1
}

IFS= read -r token || [ -n "$token" ] || die "no token on stdin"
# Header values are single-line visible ASCII; spaces only inside (e.g. "Bearer abc...").
if [ "${#token}" -lt 16 ]; then
    die "the token must be at least 16 characters long"
fi
if [ "${#token}" -gt 4096 ]; then
    die "the token must be at most 4096 characters long"
fi
not_visible_ascii='[^ -~]'
if [[ "$token" =~ $not_visible_ascii ]]; then
    die "the token may contain only printable ASCII characters"
fi
if [[ "$token" == " "* || "$token" == *" " ]]; then
    die "the token may not start or end with a space"
fi
[ -f "$seed" ] || die "seed ${seed} not found"
if grep -q '^[[:space:]]*RequiredAuthorization[[:space:]]*[:=]' "$seed"; then
    die "the seed already sets RequiredAuthorization; it must come from the environment only"
fi
if [ "$(grep -c '^Network:$' "$seed")" != 1 ]; then
    die "the seed needs exactly one top-level 'Network:' section"
fi

# FDS value escaping (FreneticUtilities FDSUtility.Escape): a backslash is written "\s".
escaped="${token//\\/\\s}"

umask 077
tmp="$(mktemp "${out}.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line"
    if [ "$line" = "Network:" ]; then
        printf '\tRequiredAuthorization: %s\n' "$escaped"
    fi
done <"$seed" >"$tmp"
mv -f "$tmp" "$out"
trap - EXIT
