#!/usr/bin/env bash
# Downloads one model file into the image and refuses to keep anything it cannot vouch for.
#
#   fetch-model.sh --url URL --dest PATH --min-bytes N --format gguf|safetensors
#                  [--sha256 HEX] [--bearer-token-file FILE]
#
# Checks, in order: size >= --min-bytes; the file starts like the claimed format (so an HTML
# error page or a truncated body never passes); the sha256 equals --sha256 when given, else the
# sha256 Hugging Face publishes for LFS files (X-Linked-Etag) for huggingface.co URLs. A URL
# with neither (Civitai without a pinned hash) is accepted on size and format alone, with a warning
# that prints the hash to pin. The file appears at --dest only after every check passed.
set -euo pipefail

prog=fetch-model

die() {
    printf '%s: ERROR: %s\n' "$prog" "$*" >&2
    exit 1
}

url="" dest="" min_bytes="" format="" want_sha="" token_file=""
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="${2:-}"; shift 2 ;;
        --dest) dest="${2:-}"; shift 2 ;;
        --min-bytes) min_bytes="${2:-}"; shift 2 ;;
        --format) format="${2:-}"; shift 2 ;;
        --sha256) want_sha="${2:-}"; shift 2 ;;
        --bearer-token-file) token_file="${2:-}"; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done

[ -n "$url" ] || die "--url is required"
[ -n "$dest" ] || die "--dest is required"
# file:// serves local mirrors and the test suite; anything else must be https.
case "$url" in https://* | file://*) ;; *) die "refusing a URL that is neither https:// nor file:// for ${dest}" ;; esac
[[ "$min_bytes" =~ ^[0-9]+$ ]] || die "--min-bytes must be a number (got '${min_bytes}')"
case "$format" in gguf | safetensors) ;; *) die "--format must be gguf or safetensors (got '${format}')" ;; esac
want_sha="${want_sha,,}"
if [ -n "$want_sha" ] && ! [[ "$want_sha" =~ ^[0-9a-f]{64}$ ]]; then
    die "--sha256 must be 64 hex characters (got '${want_sha}')"
fi
if [ -n "$token_file" ] && [ ! -s "$token_file" ]; then
    die "token file ${token_file} is missing or empty"
fi
[ ! -e "$dest" ] || die "${dest} already exists"

name="${dest##*/}"
part="${dest}.part"
mkdir -p "$(dirname "$dest")"
trap 'rm -f "$part"' EXIT

curl_common=(--fail --silent --show-error --connect-timeout 30 --retry 8 --retry-delay 15 --retry-all-errors)

# Hugging Face answers a resolve URL of an LFS file with a redirect that carries the file's sha256
# and size; read them from that first response, before following it to the CDN.
expect_size=""
if [ -z "$want_sha" ] && [[ "$url" == https://huggingface.co/* ]]; then
    headers="$(curl "${curl_common[@]}" --head "$url" | tr -d '\r')" ||
        die "could not read the headers of ${url}"
    linked_sha="$(printf '%s\n' "$headers" | sed -n 's/^[Xx]-[Ll]inked-[Ee]tag: *\(W\/\)\{0,1\}"\{0,1\}\([0-9a-fA-F]\{64\}\)"\{0,1\}$/\2/p' | head -n 1)"
    expect_size="$(printf '%s\n' "$headers" | sed -n 's/^[Xx]-[Ll]inked-[Ss]ize: *\([0-9]\{1,\}\)$/\1/p' | head -n 1)"
    [ -n "$linked_sha" ] || die "Hugging Face did not publish a sha256 (X-Linked-Etag) for ${url}; pass --sha256"
    want_sha="${linked_sha,,}"
fi

printf '%s: downloading %s\n' "$prog" "$name"
started=$SECONDS
if [ -n "$token_file" ]; then
    # The header is built in memory and handed over as /dev/fd/N: the token never appears in argv,
    # in the environment or in a file of the image. curl drops it on a redirect to another host
    # (Civitai redirects to a pre-signed storage URL that needs no token).
    curl "${curl_common[@]}" --location --continue-at - --output "$part" \
        --header @<(printf 'Authorization: Bearer %s\n' "$(tr -d '[:space:]' <"$token_file")") "$url" ||
        die "download of ${name} failed (is the token valid and allowed to download this file?)"
else
    curl "${curl_common[@]}" --location --continue-at - --output "$part" "$url" || die "download of ${name} failed"
fi

size="$(stat -c %s "$part")"
if [ "$size" -lt "$min_bytes" ]; then
    die "${name} is ${size} bytes, expected at least ${min_bytes}: wrong file or an error page"
fi
if [ -n "$expect_size" ] && [ "$size" != "$expect_size" ]; then
    die "${name} is ${size} bytes, the server announced ${expect_size}"
fi

case "$format" in
    gguf)
        [ "$(head -c 4 "$part")" = "GGUF" ] || die "${name} does not start with the GGUF magic: not a GGUF file"
        ;;
    safetensors)
        # 8-byte little-endian JSON header length, then the JSON header itself.
        header_len="$(od -An -t u8 -N 8 "$part" | tr -d ' ')"
        first_char="$(dd if="$part" bs=1 skip=8 count=1 status=none)"
        if ! [[ "$header_len" =~ ^[0-9]+$ ]] || [ "$header_len" -lt 2 ] ||
            [ "$header_len" -gt 100000000 ] || [ "$first_char" != "{" ]; then
            die "${name} does not start with a safetensors header"
        fi
        ;;
esac

got_sha="$(sha256sum "$part" | cut -d ' ' -f 1)"
if [ -n "$want_sha" ]; then
    [ "$got_sha" = "$want_sha" ] || die "${name} sha256 is ${got_sha}, expected ${want_sha}"
else
    printf '%s: WARNING: no sha256 to compare %s against; its sha256 is %s (pin it as a build argument)\n' \
        "$prog" "$name" "$got_sha" >&2
fi

chmod 0644 "$part"
mv "$part" "$dest"
trap - EXIT
printf '%s: OK %s %s bytes sha256=%s in %ss\n' "$prog" "$dest" "$size" "$got_sha" "$((SECONDS - started))"
