"""docker/swarmui/smoke.sh and its API half, smoke_client.py, against the simulated SwarmUI.

The real smoke test needs a GPU host; here the same scripts run against
providers/simulators/swarmui.py (the exact-`Authorization` gate, percent-encoded /View paths, the
generation parameter checks) and, for smoke.sh, a stand-in `docker` that runs the simulator as the
"container". So a person's first run on a GPU host fails only for reasons the GPU brings.
"""

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import unquote

import pytest

from providers import swarmui_contract as contract
from providers.simulators.swarmui import SwarmUISimulator

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "docker" / "swarmui"
TOKEN = "smoke-token-Zq3kP9xW2mN8vR5tY7uA1"
IMAGE_MODELS = [contract.VIDEO_MODEL, contract.VIDEO_MODEL_ALT]
IMAGE_LORAS = [contract.LIGHTX2V_LORA]


def load_client():
    spec = importlib.util.spec_from_file_location("smoke_client", HERE / "smoke_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def swarm_sim():
    sims = []

    def start(models=IMAGE_MODELS, loras=IMAGE_LORAS, token=TOKEN):
        sim = SwarmUISimulator(token, generation_seconds=0.05, models=list(models), loras=list(loras)).start()
        sims.append(sim)
        return sim

    yield start
    for sim in sims:
        sim.stop()


@pytest.fixture
def client(monkeypatch, tmp_path):
    module = load_client()
    monkeypatch.setenv(contract.SWARMUI_TOKEN_ENV, TOKEN)

    def main(sim, *args):
        cert = tmp_path / "cert.pem"
        cert.write_text(sim.certificate)
        return module.main([args[0], "--base-url", sim.url, "--cert", str(cert), "--session-file",
                            str(tmp_path / "session"), *args[1:]])

    return main


def generations(sim):
    return [generation.params for generation in sim.generations]


def test_probe_waits_for_the_backend_then_reports_ready(swarm_sim, client, capsys):
    sim = swarm_sim()
    sim.backend_status = "loading"
    assert client(sim, "probe") == 3
    sim.backend_status = "running"
    assert client(sim, "probe") == 0
    assert "gguf supported" in capsys.readouterr().out
    sim.backend_status = "errored"
    assert client(sim, "probe") == 1


def test_probe_fails_at_once_on_a_refused_token(swarm_sim, client, capsys):
    sim = swarm_sim(token="a-different-token-value-123")
    assert client(sim, "probe") == 1
    assert "refuses the token" in capsys.readouterr().out


def test_check_auth_and_models_pass_on_the_image_contents(swarm_sim, client, capsys):
    sim = swarm_sim()
    assert client(sim, "check-auth") == 0
    assert client(sim, "check-models") == 0
    out = capsys.readouterr().out
    assert "without the low-noise expert" in out
    # Only the three deliberate token-less requests went out without the header.
    unauthorized = [entry for entry in sim.request_log if not entry[2]]
    assert [(method, path) for method, path, _ in unauthorized] == [("GET", "/"), ("POST", "/API/GetNewSession")]


def test_check_models_names_what_the_image_lacks(swarm_sim, client, capsys):
    sim = swarm_sim(models=[contract.VIDEO_MODEL])
    assert client(sim, "check-models") == 1
    assert contract.VIDEO_MODEL_ALT in capsys.readouterr().err


def test_generate_makes_a_clip_through_the_image_to_video_params(swarm_sim, client, tmp_path, capsys):
    sim = swarm_sim()
    out_dir = tmp_path / "clips"
    assert client(sim, "generate", "--frames", "9", "--clips", "2", "--out-dir", str(out_dir)) == 0
    out = capsys.readouterr().out
    assert "time per clip: first" in out and "on average" in out
    clips = sorted(out_dir.glob("clip-*.mp4"))
    assert len(clips) == 2 and all(clip.read_bytes()[4:8] == b"ftyp" for clip in clips)
    params = generations(sim)[0]
    assert params["model"] == params["videomodel"] == contract.VIDEO_MODEL
    assert params["initimagecreativity"] == 0 and params["videoresolution"] == "Image"
    assert params["videoframes"] == 9
    assert params["loras"] == [contract.LIGHTX2V_LORA]
    assert params["lorasectionconfinement"] == [contract.LORA_SECTION_VIDEO]
    assert "videoswapmodel" not in params
    # The output path has spaces: it was fetched percent-encoded, with the token.
    views = [(path, ok) for method, path, ok in sim.request_log if path.startswith("/View/")]
    assert len(views) == 2 and all(ok and "%20" in path and " " not in path for path, ok in views)
    assert unquote(views[0][0]).lstrip("/") == sim.generations[0].output_path


def test_generate_uses_the_low_noise_expert_when_the_image_has_it(swarm_sim, client, tmp_path):
    sim = swarm_sim(models=IMAGE_MODELS + [contract.VIDEO_SWAP_MODEL],
                    loras=IMAGE_LORAS + [contract.LIGHTX2V_LORA_LOW])
    assert client(sim, "check-models") == 0
    assert client(sim, "generate", "--frames", "9", "--out-dir", str(tmp_path)) == 0
    params = generations(sim)[0]
    assert params["videoswapmodel"] == contract.VIDEO_SWAP_MODEL
    assert params["loras"] == [contract.LIGHTX2V_LORA, contract.LIGHTX2V_LORA_LOW]
    assert params["lorasectionconfinement"] == [contract.LORA_SECTION_VIDEO, contract.LORA_SECTION_VIDEO_SWAP]


def test_generate_reports_a_failed_generation(swarm_sim, client, tmp_path, capsys):
    sim = swarm_sim()
    sim.fail_next_generation("ComfyUI execution error: out of memory")
    assert client(sim, "generate", "--frames", "9", "--out-dir", str(tmp_path)) == 1
    assert "out of memory" in capsys.readouterr().err


def test_the_test_image_is_a_valid_png():
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(load_client().test_image_png()))
    image.load()
    assert image.size == (832, 480)


# --- smoke.sh with a stand-in docker ------------------------------------------------------------

FAKE_DOCKER = """#!{python}
# Stand-in for the docker CLI: `run` starts the simulated SwarmUI as the "container".
import json, os, signal, subprocess, sys, time
state = os.environ["FAKE_DOCKER_STATE"]
args = sys.argv[1:]

def record(name):
    return os.path.join(state, name + ".json")

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

if args[0] == "run":
    name = args[args.index("--name") + 1]
    host_port = args[args.index("-p") + 1].split(":")[1]
    assert "--gpus" in args and args[args.index("-e") + 1] == "{token_env}", args
    # The key and certificate come as env names only (values from the environment, never in argv).
    passed = [args[i + 1] for i, arg in enumerate(args) if arg == "-e"]
    assert "GENHUB_TLS_KEY" in passed and "GENHUB_TLS_CERT_1" in passed and not any("=" in n for n in passed), args
    token = os.environ["{token_env}"]
    log = open(os.path.join(state, name + ".log"), "w")
    print("SwarmUI starting", file=log, flush=True)
    if os.environ.get("FAKE_LEAK") == "1":
        print("RequiredAuthorization: " + token, file=log, flush=True)
    code = (
        "import os, time, sys; from providers.simulators.swarmui import SwarmUISimulator; "
        "from providers.instance_tls import from_env; "
        "sim = SwarmUISimulator(sys.argv[1], port=int(sys.argv[2]), generation_seconds=0.05, tls=from_env(os.environ), "
        "models={models!r}, loras={loras!r}).start(); time.sleep(3600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, token, host_port], cwd="{repo}", stdout=log, stderr=log,
                            start_new_session=True)
    json.dump({{"pid": proc.pid}}, open(record(name), "w"))
    print("0123456789ab")
elif args[0] == "inspect":
    name = args[-1]
    if not os.path.exists(record(name)):
        sys.exit(1)
    pid = json.load(open(record(name)))["pid"]
    fmt = args[args.index("-f") + 1] if "-f" in args else ""
    if "Running" in fmt:
        print("true" if alive(pid) else "false")
    elif "ExitCode" in fmt:
        print(0)
elif args[0] == "logs":
    sys.stdout.write(open(os.path.join(state, args[-1] + ".log")).read())
elif args[0] == "rm":
    name = args[-1]
    if os.path.exists(record(name)):
        pid = json.load(open(record(name)))["pid"]
        os.killpg(pid, signal.SIGTERM)
        os.remove(record(name))
        open(os.path.join(state, "removed"), "a").write(name + "\\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_smoke(tmp_path, *, leak=False):
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, repo=REPO, token_env=contract.SWARMUI_TOKEN_ENV,
                                         models=IMAGE_MODELS, loras=IMAGE_LORAS))
    docker.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != contract.SWARMUI_TOKEN_ENV}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DOCKER_STATE=str(state), SMOKE_PORT=str(free_port()),
               SMOKE_FRAMES="9", SMOKE_OUT_DIR=str(tmp_path / "clips"), FAKE_LEAK="1" if leak else "0",
               PYTHONPATH=str(REPO))
    result = subprocess.run(["bash", str(HERE / "smoke.sh"), "genhub-swarmui:test"], env=env, capture_output=True,
                            text=True, timeout=120)
    return result, state


def test_smoke_script_runs_the_whole_check_and_cleans_up(tmp_path):
    result, state = run_smoke(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for step in ("ready: backend running", "auth: requests without the token get 401", "models: OK",
                 "time per clip: first", "token and key never logged", "SMOKE TEST PASSED"):
        assert step in output
    assert len(list((tmp_path / "clips").glob("clip-*.mp4"))) == 1
    assert (state / "removed").read_text().startswith("genhub-swarmui-smoke-")
    assert not list(state.glob("*.json"))  # the "container" is gone


def test_smoke_script_fails_when_the_token_reaches_the_logs(tmp_path):
    result, state = run_smoke(tmp_path, leak=True)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "the token appears in the container log" in output
    assert "<token>" in output  # the log dump on failure masks it
    assert (state / "removed").exists()


def test_smoke_script_stops_when_the_container_dies(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        case "$1" in
            run) echo cafe ;;
            inspect) case "$*" in *Running*) echo false ;; *ExitCode*) echo 64 ;; *) exit 0 ;; esac ;;
            logs) echo "[genhub-entrypoint] ERROR: SWARMUI_AUTH_TOKEN is not set" ;;
        esac
    """))
    (bin_dir / "docker").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SMOKE_PORT=str(free_port()))
    result = subprocess.run(["bash", str(HERE / "smoke.sh"), "img"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "the container stopped (exit code 64)" in result.stderr
    assert "SWARMUI_AUTH_TOKEN is not set" in result.stderr  # the container log is shown
