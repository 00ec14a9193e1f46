#!/usr/bin/env bash
# Build-time check that the pinned ComfyUI loads the node packs SwarmUI's workflows use: SwarmUI's
# own ExtraNodes, ComfyUI-GGUF (UnetLoaderGGUF) and ComfyUI's Wan nodes. Runs ComfyUI on the CPU
# (no GPU during `docker build`) with --quick-test-for-ci, which exits after loading all nodes.
#
#   comfy-selftest.sh SWARMUI_DIR
set -euo pipefail

swarm="${1:?usage: comfy-selftest.sh SWARMUI_DIR}"
comfy="$swarm/dlbackend/ComfyUI"
nodes="$swarm/src/BuiltinExtensions/ComfyUIBackend"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The same custom_nodes mapping SwarmUI writes into Data/comfy-auto-model.yaml at run time.
cat >"$work/nodes.yaml" <<YAML
swarmui_nodes:
    custom_nodes: |
        $nodes/DLNodes
        $nodes/ExtraNodes
YAML

mkdir -p "$work/user" "$work/input" "$work/output" "$work/temp"
status=0
(cd "$comfy" && venv/bin/python -s main.py --cpu --quick-test-for-ci \
    --extra-model-paths-config "$work/nodes.yaml" --user-directory "$work/user" \
    --input-directory "$work/input" --output-directory "$work/output" --temp-directory "$work/temp") \
    >"$work/log" 2>&1 || status=$?
# ComfyUI's database defaults to <ComfyUI>/user even with --user-directory; start instances clean.
rm -rf "$comfy/user"

failed=0
if [ "$status" -ne 0 ]; then
    printf 'comfy-selftest: ERROR: ComfyUI exited with %s while loading nodes\n' "$status" >&2
    failed=1
fi
for pack in SwarmComfyCommon SwarmComfyExtra ComfyUI-GGUF; do
    if ! grep -E "seconds: .*/${pack}\$" "$work/log" >/dev/null; then
        printf 'comfy-selftest: ERROR: %s did not load\n' "$pack" >&2
        failed=1
    fi
done
if grep -E 'IMPORT FAILED.*(SwarmComfyCommon|SwarmComfyExtra|ComfyUI-GGUF|nodes_wan)' "$work/log" >&2; then
    printf 'comfy-selftest: ERROR: node packs SwarmUI needs failed to import (lines above)\n' >&2
    failed=1
fi
if [ "$failed" -ne 0 ]; then
    printf -- '--- ComfyUI output (last 80 lines) ---\n' >&2
    tail -n 80 "$work/log" >&2
    exit 1
fi
grep 'IMPORT FAILED' "$work/log" | sed 's/^/comfy-selftest: WARNING: /' >&2 || true
printf 'comfy-selftest: OK, SwarmUI nodes, ComfyUI-GGUF and the Wan nodes load on ComfyUI %s\n' \
    "$(git -C "$comfy" describe --tags --always 2>/dev/null || echo '?')"
