"""Runs the simulated outside world on fixed local ports until SIGINT/SIGTERM.

Point genhub at it with the printed URLs (e.g. VAST_API_URL). Each simulator is one row of SIMULATORS:
its name, the port option, the default port, and a factory that builds it from the parsed options.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from providers.simulators.vastai import VastAISimulator


def _vast(port: int, options: dict):
    return VastAISimulator(options["vast_key"], port=port)


SIMULATORS = [
    ("vast.ai", "vast_port", 8701, _vast),
]


class Command(BaseCommand):
    help = "Run the simulated vast.ai cloud (and the other simulators) on local ports until interrupted."

    def add_arguments(self, parser):
        for name, option, port, _ in SIMULATORS:
            parser.add_argument(f"--{option.replace('_', '-')}", type=int, default=port,
                                help=f"port of the {name} simulator (default {port})")
        parser.add_argument("--vast-key", default=settings.VAST_API_KEY or "sim-vast-key",
                            help="the API key the vast.ai simulator accepts (default: VAST_API_KEY or sim-vast-key)")

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        running = []
        try:
            for name, option, _, factory in SIMULATORS:
                simulator = factory(options[option], options).start()
                running.append(simulator)
                # The URL only: the accepted key may be a real VAST_API_KEY and must not be printed.
                self.stdout.write(f"{name} simulator: {simulator.url}")
            self.stdout.write("Press Ctrl+C to stop.")
            while not stop.wait(timeout=1.0):  # a timed wait lets the signal handler run promptly
                pass
        finally:
            for simulator in reversed(running):
                simulator.stop()
