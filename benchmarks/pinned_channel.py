"""What the pinned TLS channel costs genhub per call, against the simulated SwarmUI on 127.0.0.1.

Prints: generating a key and certificate for an instance; a status call on a reused connection
(what health probes and jobs do: one client per instance per process); a status call that opens a new
TLS connection (handshake plus pin check) each time; and one WebSocket generation of a short clip.
Loopback only, so it measures genhub's CPU cost, not the network's round trips.

Run: .venv/bin/python -m benchmarks.pinned_channel [--calls 200]
"""

import argparse
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genhub.test_settings")
import django  # noqa: E402

django.setup()

from benchmarks.harness import median  # noqa: E402
from providers import instance_tls  # noqa: E402
from providers.simulators.media import make_image  # noqa: E402
from providers.simulators.swarmui import SwarmUISimulator  # noqa: E402
from providers.swarmui import SwarmUIClient, build_video_params  # noqa: E402

TOKEN = "Bearer bench-pinned-channel-token"


def timed(call, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    keygen = timed(instance_tls.generate, 50)
    sim = SwarmUISimulator(TOKEN, generation_seconds=0.05).start()
    try:
        reused = SwarmUIClient(sim.url, TOKEN, certificate=sim.certificate)
        reused.status()
        warm = timed(reused.status, args.calls)

        def fresh_connection():
            reused.http.session.close()  # the next call opens (and pins) a new TLS connection
            reused.status()

        cold = timed(fresh_connection, args.calls)
        params = build_video_params(image=make_image(), image_content_type="image/png", prompt="p", negative_prompt="",
                                    seed=1, num_frames=17, fps=16, width=320, height=240, steps=4, cfg=1.0)
        clip = timed(lambda: reused.generate_video(params), 10)
    finally:
        sim.kill()
    print(f"key + certificate per instance: median {median(keygen) * 1000:.2f} ms (50 runs)")
    print(f"status, reused TLS connection:  median {median(warm) * 1000:.2f} ms ({args.calls} calls)")
    print(f"status, new TLS connection:     median {median(cold) * 1000:.2f} ms ({args.calls} calls)")
    print(f"one clip over wss + https (simulated 0.05 s generation): median {median(clip) * 1000:.1f} ms (10 clips)")


if __name__ == "__main__":
    main()
