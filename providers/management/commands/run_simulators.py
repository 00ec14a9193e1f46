"""Runs the simulated outside world on fixed local ports until SIGINT/SIGTERM.

Point genhub at it with the printed URLs (FAL_QUEUE_URL, VAST_API_URL). Each simulator is one row of
SIMULATORS: its name, its option prefix, its default port, the key it accepts, and a factory.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from providers.simulators.fal import FalSimulator
from providers.simulators.vastai import VastAISimulator

SIMULATORS = [
    # name, option prefix, default port, default key, factory(port, key)
    ("fal", "fal", 8702, lambda: settings.FAL_KEY or "sim-fal-key:secret",
     lambda port, key: FalSimulator(key, port=port, queue_seconds=1.0, run_seconds=4.0)),
    ("vast.ai", "vast", 8701, lambda: settings.VAST_API_KEY or "sim-vast-key",
     lambda port, key: VastAISimulator(key, port=port, boot_seconds=3.0, loading_seconds=3.0,
                                       swarmui_generation_seconds=4.0)),
]


class Command(BaseCommand):
    help = ("Run the simulated fal.ai queue and vast.ai cloud on local ports until interrupted. "
            "Give --fal-port and/or --vast-port to run only those; with neither, both run on their default ports.")

    def add_arguments(self, parser):
        for name, prefix, port, _, _ in SIMULATORS:
            parser.add_argument(f"--{prefix}-port", type=int, help=f"run the {name} simulator on this port "
                                                                   f"(default {port})")
            parser.add_argument(f"--{prefix}-key", help=f"the key the {name} simulator accepts")

    def handle(self, *args, **options):
        chosen = [row for row in SIMULATORS if options[f"{row[1]}_port"]] or SIMULATORS
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        running = []
        try:
            for name, prefix, default_port, default_key, factory in chosen:
                port = options[f"{prefix}_port"] or default_port
                simulator = factory(port, options[f"{prefix}_key"] or default_key()).start()
                running.append(simulator)
                # The URL only: the accepted key may be a real one and must not be printed.
                self.stdout.write(f"{name} simulator: {simulator.url}")
            self.stdout.flush()
            while not stop.wait(timeout=1.0):  # a timed wait lets the signal handler run promptly
                pass
        finally:
            for simulator in reversed(running):
                simulator.stop()
