"""What genhub's operator commands share: quiet logs, readable lines, a progress bar on a terminal.

A command's stdout is for the person (or script) that ran it. django-q2 logs every enqueue at INFO,
and the orchestrator logs its steps: those lines belong in the cluster's log, not between a command's
own lines, so commands raise those loggers to WARNING unless run with `-v 2` or more.
"""

import logging
import time

from django.core.management.base import BaseCommand

from genhub.formatting import format_duration

# Loggers whose INFO lines would otherwise be interleaved with a command's output.
CHATTY_LOGGERS = ("django-q", "jobs", "gpu_instances", "providers")


class OperatorCommand(BaseCommand):
    def execute(self, *args, **options):
        if options.get("verbosity", 1) >= 2:
            return super().execute(*args, **options)
        loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
        before = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            return super().execute(*args, **options)
        finally:  # called in-process (tests, call_command), the rest of the process keeps its logging
            for logger, level in zip(loggers, before, strict=True):
                logger.setLevel(level)


class ProgressBar:
    """One line redrawn in place, only when the output is a terminal (a log file gets the state lines only).

    Call `update` as often as wanted and `clear` before writing a normal line, so the bar never ends up
    in the middle of one.
    """

    WIDTH = 30

    def __init__(self, stream):
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.shown = False

    def update(self, fraction: float, label: str) -> None:
        if not self.enabled:
            return
        filled = round(max(0.0, min(1.0, fraction)) * self.WIDTH)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:4.0%} {label}\x1b[K", ending="")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K", ending="")
            self.shown = False


class Clock:
    """Seconds since the command started, for `[  12 s]` prefixes."""

    def __init__(self):
        self.start = time.monotonic()

    def stamp(self) -> str:
        return f"[{format_duration(time.monotonic() - self.start):>9}]"
