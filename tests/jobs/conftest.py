"""A real small disk for storage faults: a tmpfs mounted at MEDIA_ROOT that the test fills and frees."""

import os
import subprocess

import pytest

CHUNK = 64 * 1024


class SmallDisk:
    """A tmpfs of a few MB. `fill(leave=n)` uses it up but n bytes (ENOSPC after that); `free()` makes room."""

    def __init__(self, path):
        self.path = path
        self.filler = path / ".filler"

    def fill(self, *, leave: int = 0) -> None:
        with open(self.filler, "ab", buffering=0) as handle:
            try:
                while handle.write(b"\0" * CHUNK):
                    pass
            except OSError:  # ENOSPC: full
                pass
        if leave:
            os.truncate(self.filler, max(0, os.path.getsize(self.filler) - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(media_root):
    """A real filesystem that fills up, not a storage double: mounting a tmpfs needs root, which CI has.

    Other processes (a qcluster) see the same mount at MEDIA_ROOT.
    """
    media_root.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "genhub-test-media", str(media_root)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mount (root): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(media_root)
    finally:
        subprocess.run(["umount", "-l", str(media_root)], check=False)
