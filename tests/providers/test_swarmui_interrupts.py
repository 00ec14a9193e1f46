"""Stopping generations in SwarmUI: a cancelled job interrupts only its own session; a removed session ends
its generations; a wedged queue keeps its WebSocket open on keep-alives until InterruptAll or RestartBackends
ends it (simulator over real HTTP/WS)."""

import threading

import pytest

from providers.errors import TransientError
from providers.simulators.swarmui import SwarmUISimulator
from providers.swarmui import GenerationCancelled, SwarmUIClient
from tests.conftest import wait_for
from tests.providers.test_swarmui_client import TOKEN, video_params


@pytest.fixture
def slow_sim():
    sim = SwarmUISimulator(TOKEN, generation_seconds=3.0).start()
    sim.keep_alive_seconds = 0.2
    yield sim
    sim.kill()


@pytest.fixture
def client(slow_sim):
    return SwarmUIClient(slow_sim.url, TOKEN, certificate=slow_sim.certificate, status_timeout=2, ws_open_timeout=2,
                         ws_idle_timeout=2)


class Generation(threading.Thread):
    """One generation in the background, as a worker runs it, with its own cancel switch."""

    def __init__(self, client, seed):
        super().__init__(daemon=True)
        self.client, self.seed = client, seed
        self.cancel = threading.Event()
        self.result = self.error = None
        self.started_gpu = threading.Event()

    def run(self):
        try:
            self.result = self.client.generate_video(video_params(seed=self.seed), cancel=self.cancel,
                                                     on_progress=lambda fraction: self.started_gpu.set())
        except Exception as exc:  # noqa: BLE001 - kept for the assertion
            self.error = exc


def one_running_one_queued(sim, client) -> tuple[Generation, Generation]:
    """Two jobs on one GPU: the first generating, the second waiting behind it in SwarmUI's queue."""
    running, queued = Generation(client, 1), Generation(client, 2)
    running.start()
    running.started_gpu.wait(10)
    queued.start()
    wait_for(lambda: sim.status_waiting() == 1, timeout=10, message="the second job queued in SwarmUI")
    return running, queued


def test_cancelling_a_running_generation_interrupts_only_its_own_session(slow_sim, client):
    running, queued = one_running_one_queued(slow_sim, client)

    running.cancel.set()
    running.join(10)
    queued.join(20)

    assert isinstance(running.error, GenerationCancelled)
    assert queued.error is None and queued.result.video
    first, second = slow_sim.generations
    assert first.error == "Generation session interrupted." and second.error is None
    # One interrupt, of the cancelled job's own session; the other job ran on a different one.
    assert slow_sim.interrupts == [(first.session_id, False)]
    assert first.session_id != second.session_id


def test_a_generation_cancelled_while_queued_never_reaches_the_gpu(slow_sim, client):
    running, queued = one_running_one_queued(slow_sim, client)

    queued.cancel.set()
    queued.join(10)
    running.join(20)

    assert isinstance(queued.error, GenerationCancelled)
    assert running.error is None and running.result.video
    assert [g.params["seed"] for g in slow_sim.generations] == [1]
    assert len(slow_sim.interrupted_waiting) == 1


def test_a_removed_session_takes_its_generations_with_it(slow_sim, client):
    # SwarmUI's RemoveSession cancels the session's interrupt token: its generations, running or waiting,
    # end there. A worker that lost its session never finds its clip finished later by a generation
    # nobody can interrupt any more.
    running, queued = one_running_one_queued(slow_sim, client)

    slow_sim.expire_sessions()
    running.join(10)
    queued.join(10)

    for generation in (running, queued):
        assert isinstance(generation.error, TransientError) and "interrupted" in generation.error.message
    assert [g.error for g in slow_sim.generations] == ["Generation session interrupted."]
    assert len(slow_sim.interrupted_waiting) == 1
    assert slow_sim.interrupts == []  # nobody called InterruptAll


def test_a_wedged_queue_answers_status_and_sends_keep_alives_until_interrupt_all(slow_sim, client):
    slow_sim.generation_seconds = 0.4
    slow_sim.wedge(1)
    wedged = Generation(client, 1)
    wedged.start()
    wait_for(lambda: slow_sim.generations and slow_sim.generations[0].wedged, timeout=10, message="the wedge")
    # Longer than the client's WebSocket idle timeout: keep-alives hold the socket open, nothing advances.
    wedged.join(client.ws_idle_timeout * 2)
    assert wedged.is_alive()
    assert client.status()["backend_status"]["status"] == "running"

    SwarmUIClient(slow_sim.url, TOKEN, certificate=slow_sim.certificate, status_timeout=2).interrupt_all()
    wedged.join(10)

    assert isinstance(wedged.error, TransientError) and "interrupted" in wedged.error.message
    assert slow_sim.interrupts[-1][1] is True  # every session of the user
    assert client.generate_video(video_params(seed=2)).video  # the next generation runs normally


def test_restart_backends_ends_a_wedged_generation_and_the_backend_comes_back(slow_sim, client):
    slow_sim.generation_seconds = 0.4
    slow_sim.restart_seconds = 3.0  # long enough to see it loading
    slow_sim.wedge(1)
    wedged = Generation(client, 1)
    wedged.start()
    wait_for(lambda: slow_sim.generations and slow_sim.generations[0].wedged, timeout=10, message="the wedge")

    client = SwarmUIClient(slow_sim.url, TOKEN, certificate=slow_sim.certificate, status_timeout=2)
    assert client.restart_backends() == 1
    wedged.join(10)

    assert isinstance(wedged.error, TransientError) and wedged.error.code == "generation_failed"
    assert client.is_ready().reason == "SwarmUI backend is loading"
    wait_for(lambda: client.is_ready().ready, timeout=10, message="the backend to run again")
    assert client.generate_video(video_params(seed=2)).video
    assert slow_sim.backend_restarts == 1
