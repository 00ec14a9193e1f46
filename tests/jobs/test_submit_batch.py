"""`submit_batch`: readable output, one line per change, a progress bar only on a terminal, no queue log lines."""

import io
import logging
import re

import pytest
from django.core.management import CommandError, call_command

from providers.simulators.media import make_image

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def images(tmp_path):
    paths = []
    for number in range(2):
        path = tmp_path / f"shot{number}.png"
        path.write_bytes(make_image(color=(number * 90, 100, 50)))
        paths.append(str(path))
    return paths


def submit(images, *extra, stdout=None):
    out = stdout or io.StringIO()
    call_command("submit_batch", *images, "--user", "alice", "--provider", "fal", "--prompt", "a slow pan",
                 "--params", '{"num_frames": 17}', *extra, stdout=out)
    return out.getvalue()


def test_wait_prints_one_readable_line_per_change_and_no_queue_log_lines(user, images, fal_sim, qcluster, caplog):
    qcluster(FAL_POLL_INTERVAL="0.2")
    caplog.set_level(logging.DEBUG)

    output = submit(images, "--wait", "--poll-seconds", "0.1")

    lines = output.splitlines()
    assert re.fullmatch(r"batch [0-9a-f-]{36}: 2 jobs on fal", lines[0])
    assert re.search(r"\] succeeded: 2 succeeded$", lines[-2]) and lines[-1].startswith("done in ")
    assert "$0." in lines[-1]
    state_lines = lines[1:-1]
    assert all(re.fullmatch(r"\[ *\d+ s\] [a-z ]+: (\d+ [a-zA-Z ]+(, )?)+", line) for line in state_lines), lines
    assert len(set(state_lines)) == len(state_lines)  # one line per change, not one per poll
    assert not re.search(r"[{}'\"]", output)  # no raw dicts
    assert "\r" not in output  # not a terminal: no progress bar
    assert not [r for r in caplog.records if r.name == "django-q" and r.levelno < logging.WARNING]


def test_wait_draws_a_progress_bar_on_a_terminal(user, images, fal_sim, qcluster):
    qcluster(FAL_POLL_INTERVAL="0.2")
    fal_sim.run_seconds = 1.0

    output = submit(images, "--wait", "--poll-seconds", "0.1", stdout=Terminal())

    assert re.search(r"\r\[[#.]{30}\] +\d+% \d/2 done", output)
    # The bar is wiped before each state line, so no line starts in the middle of a bar.
    for line in output.replace("\r\x1b[K", "\n").splitlines():
        assert not line.startswith("[#") or "done" in line


def test_a_failed_job_exits_non_zero_with_a_count(user, images, fal_sim, qcluster):
    fal_sim.inject("validation_error", 1)
    qcluster(FAL_POLL_INTERVAL="0.2")

    with pytest.raises(CommandError, match=r"^1 of 2 jobs failed$"):
        submit(images, "--wait", "--poll-seconds", "0.1")


def test_without_wait_it_prints_the_batch_and_returns(user, images):
    assert re.fullmatch(r"batch [0-9a-f-]{36}: 2 jobs on fal\n", submit(images))
