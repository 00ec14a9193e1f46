"""Peak memory of a real web process (gunicorn, one sync worker, scratch PostgreSQL) while it is sent
the hostile uploads of issue 10, and how much of each body it read.

For each case: the worker's peak RSS above its idle size (VmHWM after resetting it through
/proc/<pid>/clear_refs, cross-checked by sampling VmRSS), its RSS afterwards, how many bytes of the
body the client got into its socket before the server answered and closed (an upper bound on what
the server read: the rest is what the kernel's socket buffers held) against the body's size, the
status and the first error. Bodies are streamed from generators; nothing large is
built in memory here either.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/genhub .venv/bin/python -m benchmarks.hostile_uploads
"""

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

from benchmarks.harness import ROOT, scratch_database, wait_until

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from PIL import Image  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from providers.simulators.media import make_image  # noqa: E402

MiB = 1024 * 1024
CHUNK = 256 * 1024


# --- the web process ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port: int) -> subprocess.Popen:
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "genhub.test_settings",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "MEDIA_ROOT": str(settings.MEDIA_ROOT), "LOG_LEVEL": "WARNING"}
    log = open(Path(tempfile.gettempdir()) / "genhub-bench-gunicorn.log", "w")
    return subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "genhub.wsgi", "--bind",
                             f"127.0.0.1:{port}", "--workers", "1", "--timeout", "600"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def worker_pid(master: int) -> int | None:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Sampler(threading.Thread):
    """VmRSS every few milliseconds: the peak as a second opinion on VmHWM."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            time.sleep(0.005)


# --- bodies, streamed ------------------------------------------------------------------------------


class Multipart:
    """A multipart body as a list of parts; each file's content is an iterable of chunks of known size."""

    def __init__(self):
        self.boundary = uuid.uuid4().hex
        self.parts: list[tuple[bytes, object, int]] = []  # (header, chunks, size)

    def field(self, name: str, value: str):
        data = value.encode()
        self._add(f'Content-Disposition: form-data; name="{name}"\r\n\r\n', [data], len(data))

    def file(self, name: str, filename: str, chunks, size: int):
        self._add(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n", chunks, size)

    def _add(self, header: str, chunks, size: int):
        self.parts.append(((f"--{self.boundary}\r\n" + header).encode(), chunks, size))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def length(self) -> int:
        return sum(len(h) + size + 2 for h, _, size in self.parts) + len(f"--{self.boundary}--\r\n")

    def stream(self):
        for header, chunks, _ in self.parts:
            yield header
            yield from chunks
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()


def zeros(size: int):
    block = bytes(CHUNK)
    while size > 0:
        yield block[:min(CHUNK, size)]
        size -= CHUNK


def zip_of_zero_members(count: int, member_bytes: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        block = bytes(member_bytes)
        for n in range(count):
            archive.writestr(f"zeros/{n:04d}.png", block)
    return buffer.getvalue()


def noise_png(side: int) -> bytes:
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --- sending -----------------------------------------------------------------------------------------


def send(port: int, token: str, *, body_chunks, length: int, content_type: str, path="/api/batches/"):
    """Streams the body; stops sending if the server closes on us. → (status or None, first error, bytes sent)"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    sent = 0
    conn.putrequest("POST", path)
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    try:
        for chunk in body_chunks:
            conn.send(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        response = conn.getresponse()
        body = response.read()
        status = response.status
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
        return None, f"(no response: {type(exc).__name__})", sent
    finally:
        conn.close()
    try:
        payload = json.loads(body)
        errors = payload.get("errors") or [payload]
        first = errors[0].get("message", "")
    except (ValueError, AttributeError, IndexError):
        first = body[:120].decode(errors="replace")
    return status, first, sent


def measure(pid: int, case):
    """Runs `case()` → (its result, idle KiB, peak KiB above idle by VmHWM and by sampling, KiB after)."""
    time.sleep(0.3)
    idle = status_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    sampler = Sampler(pid)
    sampler.start()
    result = case()
    time.sleep(0.3)
    sampler.stopped.set()
    sampler.join()
    return result, idle, status_kib(pid, "VmHWM") - idle, sampler.peak - idle, status_kib(pid, "VmRSS")


def cases(images_per_batch: int):
    png = make_image(width=320, height=240)
    bomb = zip_of_zero_members(1000, MiB)
    big_noise = noise_png(1000)

    def zip_bomb():
        body = Multipart()
        body.field("provider", "fal")
        body.field("prompt", "a slow pan")
        body.file("images", "bomb.zip", [bomb], len(bomb))
        return body

    def one_gigabyte_image():
        body = Multipart()
        body.field("provider", "fal")
        body.field("prompt", "a slow pan")
        body.file("images", "huge.png", zeros(1000 * MiB), 1000 * MiB)
        return body

    def too_many_images():
        body = Multipart()
        body.field("provider", "fal")
        body.field("prompt", "a slow pan")
        for n in range(1003):
            body.file("images", f"i{n}.png", [png], len(png))
        return body

    def declared_over_limit():
        body = Multipart()
        body.field("provider", "fal")
        size = settings.GENHUB_MAX_UPLOAD_BYTES + MiB
        body.file("images", "a.png", zeros(size), size)
        return body

    def full_batch():
        body = Multipart()
        body.field("provider", "fal")
        body.field("prompt", "a slow pan")
        body.field("params", json.dumps({"num_frames": 17}))
        for n in range(images_per_batch):
            body.file("images", f"noise{n}.png", [big_noise], len(big_noise))
        return body

    def deep_json():
        data = ('{"provider": "fal", "prompt": "p", "items": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
        return data

    def huge_rows_file():
        line = b"a.png," + b"x" * 1000 + b"\n"
        count = (15 * MiB) // len(line)
        body = Multipart()
        body.field("provider", "fal")
        body.field("prompt", "a slow pan")
        body.file("images", "a.png", [png], len(png))
        body.file("items", "rows.csv", [b"file,prompt\n"] + [line] * count, 12 + len(line) * count)
        return body

    return [
        ("1.1 MB ZIP of 1,000 zero members of 1 MiB", zip_bomb),
        ("1 GB single file as `images`", one_gigabyte_image),
        ("1,003 images (small PNGs)", too_many_images),
        (f"body declaring {settings.GENHUB_MAX_UPLOAD_BYTES + MiB + 200} bytes (over GENHUB_MAX_UPLOAD_BYTES)",
         declared_over_limit),
        ("15 MiB CSV rows file (15,000 rows)", huge_rows_file),
        ("100,000-deep JSON body", deep_json),
        (f"valid batch: {images_per_batch} noise PNGs of {len(big_noise) // 1024} KiB "
         f"({images_per_batch * len(big_noise) // MiB} MiB)", full_batch),
    ]


def run(images_per_batch: int):
    with scratch_database():
        user = get_user_model().objects.create_user("bench", password="bench-password-1")
        token = Token.objects.create(user=user).key
        port = free_port()
        master = start_gunicorn(port)
        try:
            pid = wait_until(lambda: worker_pid(master.pid), timeout=30)
            wait_until(lambda: _answers(port), timeout=30)
            print(f"gunicorn worker pid {pid}, 1 sync worker, scratch DB {connection.settings_dict['NAME']}")
            print(f"{'case':<62} {'idle':>7} {'peak+':>7} {'sampled+':>8} {'after':>7} {'sent':>13} {'body':>13} "
                  f"{'status':>6}  first error")
            for name, make in cases(images_per_batch):
                body = make()
                if isinstance(body, bytes):
                    def case(data=body):
                        return send(port, token, body_chunks=[data], length=len(data),
                                    content_type="application/json")
                    length = len(body)
                else:
                    def case(multipart=body):
                        return send(port, token, body_chunks=multipart.stream(), length=multipart.length(),
                                    content_type=multipart.content_type)
                    length = body.length()
                (status, first, sent), idle, hwm, sampled, after = measure(pid, case)
                print(f"{name:<62} {idle // 1024:>5}MB {hwm // 1024:>5}MB {sampled // 1024:>6}MB {after // 1024:>5}MB "
                      f"{sent:>13,} {length:>13,} {status or '-':>6}  {first[:90]}")
        finally:
            master.terminate()
            master.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/api/batches/")
        conn.getresponse().read()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200, help="images in the valid-batch case")
    run(parser.parse_args().images)
