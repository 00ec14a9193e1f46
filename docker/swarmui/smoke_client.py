"""The API half of smoke.sh: talks to a running genhub SwarmUI container like genhub does.

Subcommands (all read the token from the SWARMUI_AUTH_TOKEN environment variable and send it as
the `Authorization` header, as genhub does; model names come from providers/swarmui_contract.py).
The base URL is https and `--cert` the instance's certificate (PEM): like genhub, the client trusts
that certificate and nothing else, and checks no host name.

    probe         exit 0 when the ComfyUI backend is `running`, 3 while it is still starting,
                  1 when it failed (errored/disabled, or the token is refused)
    check-auth    requests without the token must get HTTP 401
    check-models  ListModels must list the contract's models and LoRA
    generate      one or more short image-to-video clips; fetches each output and prints the time

Standard library only, so it runs on any GPU host with python3 (3.8 or newer).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib.util
import json
import os
import ssl
import struct
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import quote, urlsplit

READY, NOT_YET, FAILED = 0, 3, 1
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".gif", ".webp")
CONTRACT_PATH = Path(__file__).resolve().parents[2] / "providers" / "swarmui_contract.py"


class SmokeError(Exception):
    pass


def load_contract():
    spec = importlib.util.spec_from_file_location("swarmui_contract", CONTRACT_PATH)
    if spec is None or not CONTRACT_PATH.exists():
        raise SmokeError(f"contract not found at {CONTRACT_PATH}: run smoke.sh from a genhub checkout")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Swarm:
    def __init__(self, base_url: str, token: str | None, session_file: str | None = None, *, cert: str):
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise SmokeError(f"base URL must be https://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 443
        # The pinned certificate is the only trust anchor; the name cannot match an IP, so none is checked.
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata=Path(cert).read_text(encoding="ascii"))
        self.token = token
        self.session_file = session_file
        self.session_id = None

    def raw(self, method: str, path: str, body: bytes | None = None, *, auth: bool = True,
            timeout: float = 30, headers: dict | None = None) -> tuple[int, bytes]:
        """One request, no redirects followed (so a 302 stays visible)."""
        all_headers = dict(headers or {})
        if auth and self.token is not None:
            all_headers["Authorization"] = self.token
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.context)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def post(self, route: str, body: dict, *, auth: bool = True, timeout: float = 60) -> tuple[int, dict]:
        status, raw = self.raw("POST", f"/API/{route}", json.dumps(body).encode(), auth=auth, timeout=timeout,
                               headers={"Content-Type": "application/json"})
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": raw[:200].decode("utf-8", "replace")}
        return status, data if isinstance(data, dict) else {"error": f"unexpected answer {data!r}"}

    def new_session(self) -> str:
        status, data = self.post("GetNewSession", {})
        if status != 200 or "session_id" not in data:
            raise SmokeError(f"GetNewSession: HTTP {status} {data}")
        self.session_id = data["session_id"]
        if self.session_file:
            Path(self.session_file).write_text(self.session_id, encoding="ascii")
        return self.session_id

    def call(self, route: str, body: dict | None = None, *, timeout: float = 60) -> dict:
        """A session route; renews the session once on `invalid_session_id`; raises on any error."""
        if self.session_id is None and self.session_file and Path(self.session_file).is_file():
            self.session_id = Path(self.session_file).read_text(encoding="ascii").strip() or None
        if self.session_id is None:
            self.new_session()
        for attempt in range(2):
            status, data = self.post(route, {**(body or {}), "session_id": self.session_id}, timeout=timeout)
            if data.get("error_id") == "invalid_session_id" and attempt == 0:
                self.new_session()
                continue
            if status != 200 or "error" in data or "error_id" in data:
                raise SmokeError(f"{route}: HTTP {status} {data}")
            return data
        raise SmokeError(f"{route}: the session keeps expiring")

    def fetch(self, view_path: str, timeout: float = 300) -> bytes:
        # Output names carry the prompt (spaces and all); SwarmUI un-escapes the request path.
        status, data = self.raw("GET", "/" + quote(view_path, safe="/"), timeout=timeout)
        if status != 200:
            raise SmokeError(f"GET {view_path}: HTTP {status} {data[:200]!r}")
        return data


def probe(swarm: Swarm) -> int:
    try:
        status = swarm.call("GetCurrentStatus")
    except (OSError, http.client.HTTPException) as error:
        print(f"not answering yet ({error.__class__.__name__})")
        return NOT_YET
    except SmokeError as error:
        if "HTTP 401" in str(error) and "invalid_session_id" not in str(error):
            print(f"FAIL: SwarmUI refuses the token: {error}")
            return FAILED
        print(f"not ready: {error}")
        return NOT_YET
    backend = status.get("backend_status", {})
    state = backend.get("status")
    if state == "running":
        features = status.get("supported_features", [])
        if "gguf" not in features:
            print(f"FAIL: backend running without GGUF support (features: {features})")
            return FAILED
        print("ready: backend running, gguf supported")
        return READY
    if state in ("errored", "disabled", "all_disabled", "empty"):
        print(f"FAIL: backend {state}: {backend.get('message', '')}")
        return FAILED
    print(f"waiting: backend {state}: {backend.get('message', '')}")
    return NOT_YET


def check_auth(swarm: Swarm) -> None:
    status, _ = swarm.raw("GET", "/", auth=False)
    if status != 401:
        raise SmokeError(f"GET / without the token answered HTTP {status}, expected 401")
    status, _ = swarm.post("GetNewSession", {}, auth=False)
    if status != 401:
        raise SmokeError(f"GetNewSession without the token answered HTTP {status}, expected 401")
    status, _ = swarm.raw("GET", "/")
    if status not in (200, 302):
        raise SmokeError(f"GET / with the token answered HTTP {status}, expected 302")
    print("auth: requests without the token get 401, with it they pass")


def strip_safetensors(name: str) -> str:
    """LoRAs are listed with their extension; the contract names them without."""
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name


def listed(swarm: Swarm, subtype: str) -> dict[str, dict]:
    data = swarm.call("ListModels", {"path": "", "depth": 5, "subtype": subtype})
    return {entry["name"]: entry for entry in data.get("files", [])}


def check_models(swarm: Swarm, contract) -> None:
    models = listed(swarm, "Stable-Diffusion")
    loras = {strip_safetensors(name): entry for name, entry in listed(swarm, "LoRA").items()}
    print("models:", ", ".join(sorted(models)) or "(none)")
    print("LoRAs:", ", ".join(sorted(loras)) or "(none)")
    missing = [name for name in (contract.VIDEO_MODEL, contract.VIDEO_MODEL_ALT, *contract.REQUIRED_MODELS)
               if name not in models]
    missing += [name for name in (contract.LIGHTX2V_LORA, *contract.REQUIRED_LORAS) if name not in loras]
    if missing:
        raise SmokeError(f"not listed by SwarmUI: {', '.join(sorted(set(missing)))}")
    if (contract.VIDEO_SWAP_MODEL in models) != (contract.LIGHTX2V_LORA_LOW in loras):
        raise SmokeError("the low-noise model and its LoRA must come together (WITH_LOW_NOISE)")
    architecture = models[contract.VIDEO_MODEL].get("architecture")
    if architecture != "wan-2_2-image2video-14b":
        raise SmokeError(f"{contract.VIDEO_MODEL} is detected as {architecture!r}, not wan-2_2-image2video-14b")
    alt_architecture = models[contract.VIDEO_MODEL_ALT].get("architecture")
    if alt_architecture != "wan-2_2-image2video-14b":
        print(f"WARNING: {contract.VIDEO_MODEL_ALT} is detected as {alt_architecture!r}")
    print(f"models: OK ({'with' if contract.VIDEO_SWAP_MODEL in models else 'without'} the low-noise expert)")


def test_image_png(width: int = 832, height: int = 480) -> bytes:
    """A small synthetic init image (gradient with a square), built with zlib only."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # PNG filter: none
        for x in range(width):
            inside = abs(x - width // 2) < height // 5 and abs(y - height // 2) < height // 5
            row += bytes((220, 40, 40) if inside else (x * 255 // width, y * 255 // height, 160))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) \
        + chunk(b"IEND", b"")


def generation_request(contract, models: dict, loras: dict, *, model: str, frames: int, seed: int,
                       use_lora: bool) -> dict:
    """Reference §3.5: Wan 2.2 I2V through the Image To Video params, LoRAs confined per expert."""
    request = {
        "images": 1,
        "prompt": "a red cube slowly turns on a table, soft light, static camera",
        "negativeprompt": "",
        "model": model,
        "initimage": "data:image/png;base64," + base64.b64encode(test_image_png()).decode(),
        "initimagecreativity": 0,
        "width": 832,
        "height": 480,
        "seed": seed,
        "videomodel": model,
        "videoframes": frames,
        "videosteps": 4,
        "videocfg": 1,
        "videofps": 16,
        "videoresolution": "Image",
        "videoformat": "h264-mp4",
        "sampler": "euler",
        "scheduler": "simple",
    }
    lora_names, sections = [], []
    if use_lora:
        lora_names.append(contract.LIGHTX2V_LORA)
        sections.append(contract.LORA_SECTION_VIDEO)
    if contract.VIDEO_SWAP_MODEL in models:
        request["videoswapmodel"] = contract.VIDEO_SWAP_MODEL
        request["videoswappercent"] = 0.5
        if use_lora and contract.LIGHTX2V_LORA_LOW in loras:
            lora_names.append(contract.LIGHTX2V_LORA_LOW)
            sections.append(contract.LORA_SECTION_VIDEO_SWAP)
    if lora_names:
        request["loras"] = lora_names
        request["loraweights"] = ["1"] * len(lora_names)
        request["lorasectionconfinement"] = sections
    return request


def generate(swarm: Swarm, contract, *, model: str | None, frames: int, clips: int, out_dir: str,
             use_lora: bool, timeout: float) -> None:
    models = listed(swarm, "Stable-Diffusion")
    loras = {strip_safetensors(name) for name in listed(swarm, "LoRA")}
    model = model or contract.VIDEO_MODEL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = []
    for index in range(1, clips + 1):
        body = generation_request(contract, models, loras, model=model, frames=frames, seed=1000 + index,
                                  use_lora=use_lora)
        started = time.monotonic()
        data = swarm.call("GenerateText2Image", body, timeout=timeout)
        generated = time.monotonic() - started
        outputs = [path for path in data.get("images", []) if isinstance(path, str)]
        videos = [path for path in outputs if path.lower().endswith(VIDEO_EXTENSIONS)]
        if not videos:
            raise SmokeError(f"GenerateText2Image returned no video: {data}")
        if videos[0].startswith("data:"):
            raise SmokeError("got a data: URI; the request must not set donotsave")
        video = swarm.fetch(videos[0])
        total = time.monotonic() - started
        if len(video) < 1024 or video[4:8] != b"ftyp":
            raise SmokeError(f"{videos[0]} is not an MP4 ({len(video)} bytes)")
        target = out / f"clip-{index}.mp4"
        target.write_bytes(video)
        timings.append(generated)
        note = " (includes loading the models)" if index == 1 else ""
        print(f"clip {index}: {frames} frames, generated in {generated:.1f}s, fetched in {total:.1f}s{note}; "
              f"{len(video)} bytes -> {target}")
    line = f"time per clip: first {timings[0]:.1f}s"
    if len(timings) > 1:
        line += f", then {sum(timings[1:]) / (len(timings) - 1):.1f}s on average (models loaded)"
    print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["probe", "check-auth", "check-models", "generate"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--cert", required=True, help="the instance's certificate (PEM), pinned")
    parser.add_argument("--session-file")
    parser.add_argument("--model", help="video model to use (default: the contract's VIDEO_MODEL)")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--out-dir", default="smoke-output")
    parser.add_argument("--no-lora", action="store_true", help="do not apply the lightx2v LoRA(s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for one generation request")
    args = parser.parse_args(argv)

    token = os.environ.get("SWARMUI_AUTH_TOKEN")
    if not token:
        print("FAIL: SWARMUI_AUTH_TOKEN is not set", file=sys.stderr)
        return FAILED
    swarm = Swarm(args.base_url, token, args.session_file, cert=args.cert)
    try:
        if args.command == "probe":
            return probe(swarm)
        contract = load_contract()
        if args.command == "check-auth":
            check_auth(swarm)
        elif args.command == "check-models":
            check_models(swarm, contract)
        else:
            generate(swarm, contract, model=args.model, frames=args.frames, clips=args.clips, out_dir=args.out_dir,
                     use_lora=not args.no_lora, timeout=args.timeout)
    except (SmokeError, OSError, http.client.HTTPException) as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
