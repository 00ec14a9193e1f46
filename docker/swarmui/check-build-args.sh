#!/usr/bin/env bash
# First step of the image build: fail in seconds, with the fix spelled out, instead of after an
# hour of downloads or, worse, with an image that silently lacks the Civitai model.
#
#   check-build-args.sh TOKEN_FILE
#
# Reads the build arguments CIVITAI_MODEL_URL, CIVITAI_MODEL_SHA256 and WITH_LOW_NOISE from the
# environment (Docker exposes ARGs to RUN that way). Never prints the token.
set -euo pipefail

token_file="${1:?usage: check-build-args.sh TOKEN_FILE}"
errors=0

fail() {
    printf 'build arguments: ERROR: %s\n' "$*" >&2
    errors=$((errors + 1))
}

url="${CIVITAI_MODEL_URL:-}"
if [ -z "$url" ]; then
    fail "CIVITAI_MODEL_URL is not set. Pass the download URL of wan22EnhancedNSFWCameraPrompt_nsfwFASTMOVEV2Q8H.gguf," \
        "e.g. --build-arg CIVITAI_MODEL_URL=https://civitai.com/api/download/models/<modelVersionId>"
else
    case "$url" in
        https://*) ;;
        *) fail "CIVITAI_MODEL_URL must be an https:// URL" ;;
    esac
    # Build arguments are recorded in the image history: a token inside the URL would ship with the image.
    case "${url,,}" in
        *token=* | *api_key=* | *apikey=*)
            fail "CIVITAI_MODEL_URL carries a token; remove it and pass the token as the BuildKit secret civitai_token"
            ;;
    esac
fi

sha="${CIVITAI_MODEL_SHA256:-}"
if [ -n "$sha" ] && ! [[ "${sha,,}" =~ ^[0-9a-f]{64}$ ]]; then
    fail "CIVITAI_MODEL_SHA256 must be empty or 64 hex characters"
fi

if [ ! -s "$token_file" ]; then
    fail "the Civitai API token is missing. Build with BuildKit and pass it as a secret:" \
        "CIVITAI_TOKEN=... docker buildx build --secret id=civitai_token,env=CIVITAI_TOKEN ..." \
        "(or --secret id=civitai_token,src=/path/to/token-file)"
fi

case "${WITH_LOW_NOISE:-0}" in
    0 | 1) ;;
    *) fail "WITH_LOW_NOISE must be 0 or 1 (got '${WITH_LOW_NOISE}')" ;;
esac

if [ "$errors" -gt 0 ]; then
    printf 'build arguments: %d problem(s), see docs/swarmui-image.md; stopping the build.\n' "$errors" >&2
    exit 1
fi
printf 'build arguments: OK (WITH_LOW_NOISE=%s)\n' "${WITH_LOW_NOISE:-0}"
