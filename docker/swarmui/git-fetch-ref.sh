#!/usr/bin/env bash
# Checks out exactly one tag or commit of a repository, without its history.
#
#   git-fetch-ref.sh REPO_URL DIR REF [BRANCH]
#
# REF may be a tag, a branch or a full commit SHA (GitHub serves any reachable commit by SHA).
# BRANCH, when given, names the checked-out commit as that local branch: SwarmUI derives its
# reported version from .git/refs/heads/master.
set -euo pipefail

repo="${1:?usage: git-fetch-ref.sh REPO_URL DIR REF [BRANCH]}"
dir="${2:?usage: git-fetch-ref.sh REPO_URL DIR REF [BRANCH]}"
ref="${3:?usage: git-fetch-ref.sh REPO_URL DIR REF [BRANCH]}"
branch="${4:-}"

case "$ref" in
    -*) printf 'git-fetch-ref: ERROR: bad ref %s\n' "$ref" >&2; exit 1 ;;
esac

mkdir -p "$dir"
git -C "$dir" init --quiet
git -C "$dir" remote add origin "$repo"
if ! git -C "$dir" fetch --quiet --depth 1 origin "$ref"; then
    printf 'git-fetch-ref: ERROR: %s has no tag, branch or commit %s\n' "$repo" "$ref" >&2
    exit 1
fi
if [ -n "$branch" ]; then
    git -C "$dir" checkout --quiet -B "$branch" FETCH_HEAD
else
    git -C "$dir" checkout --quiet --detach FETCH_HEAD
fi
printf 'git-fetch-ref: %s %s -> %s\n' "$repo" "$ref" "$(git -C "$dir" rev-parse HEAD)"
