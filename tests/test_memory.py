"""Freed native memory goes back to the OS after a pump's decoding."""

from concurrent.futures import ThreadPoolExecutor

from genhub import memory
from jobs import artifacts
from providers.simulators.media import make_image, make_video


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])


def test_freed_decode_buffers_are_given_back_on_glibc():
    clip = make_video(make_image(), frames=17, fps=16, width=640, height=480)
    with ThreadPoolExecutor(8) as pool:  # as the pump's collector decodes
        list(pool.map(lambda _: artifacts.inspect_video(clip), range(64)))
    before = rss_kb()

    assert memory.release_freed_memory()  # this suite runs on glibc
    assert rss_kb() <= before


def test_without_malloc_trim_nothing_is_called(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)

    assert memory.release_freed_memory() is False
