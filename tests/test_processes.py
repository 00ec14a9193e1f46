"""A holder's process identity: gone is said only of a process of this machine and container that ended."""

import os
import subprocess
import sys

from genhub import processes


def ended_process() -> str:
    """The identity a process had, taken while it ran; it has exited (and been reaped) since."""
    child = subprocess.Popen([sys.executable, "-c", "from genhub.processes import this_process; "
                              "print(this_process(), flush=True); import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(__file__)))
    identity = child.stdout.readline().strip()
    child.communicate("")
    return identity


def test_a_running_process_is_never_gone():
    assert not processes.is_gone(processes.this_process())


def test_a_process_that_ended_is_gone():
    identity = ended_process()
    assert identity.count("/") == 3
    assert processes.is_gone(identity)


def test_a_reused_pid_is_told_from_the_process_that_had_it():
    namespace, pid, started = processes.this_process().rsplit("/", 2)
    assert processes.is_gone(f"{namespace}/{pid}/{int(started) - 1}")


def test_a_process_of_another_machine_or_container_is_never_judged():
    namespace, pid, started = processes.this_process().rsplit("/", 2)
    boot, pidns = namespace.split("/")
    # pid 999999999 exists nowhere, but only this machine's and this container's /proc could say so.
    assert not processes.is_gone(f"another-boot-id/{pidns}/999999999/1")
    assert not processes.is_gone(f"{boot}/pid:[1]/999999999/1")
    assert processes.is_gone(f"{boot}/{pidns}/999999999/1")


def test_holders_that_name_no_process_are_left_to_their_heartbeats():
    for identity in ("", "dead", "a/b/c", "a/b/x/1", "//1/"):
        assert not processes.is_gone(identity)
