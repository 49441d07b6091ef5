"""Long jobs and per-visitor state (hub/jobs.py, hub/visitors.py), proved once here; each demo's tests check its
own Stop end to end."""

import threading
import time

import pytest

from hub.errors import HubError
from hub.jobs import Job, VisitorJobs, running_jobs
from hub.visitors import StopSwitches, VisitorStore


def counting(steps: int, step_s: float = 0.01):
    """A stand-in for a library call: one step at a time, checking the stop switch between steps."""

    def work(job: Job) -> None:
        for step in range(1, steps + 1):
            if job.should_stop():
                return
            time.sleep(step_s)
            job.post(step)

    return work


def wait_until_no_jobs(timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while running_jobs and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_job_yields_its_progress_and_ends_with_the_last():
    seen = list(Job(time_limit_s=10).run(counting(30), update_every_s=0.05))
    assert seen[-1] == 30
    assert seen == sorted(seen) and len(seen) < 30  # read at a bounded rate, not once per step
    wait_until_no_jobs()
    assert not running_jobs


def test_closing_the_reader_stops_the_work_within_a_step():
    job = Job(time_limit_s=10)
    reader = job.run(counting(10_000, step_s=0.01), update_every_s=0.02)
    assert next(reader) >= 1
    started = time.monotonic()
    reader.close()  # what Gradio does on Stop, on a client's cancel and when the visitor leaves
    assert time.monotonic() - started < 0.05  # closing never waits: Gradio closes readers on its event loop
    assert job.stop.is_set()
    job.thread.join(timeout=1)
    assert not job.thread.is_alive()
    assert job.progress < 10_000


def test_a_closed_job_holds_its_slot_until_its_step_ends():
    slots = threading.BoundedSemaphore(1)  # one job of this kind at a time
    first = Job(time_limit_s=10, slots=slots)
    reader = first.run(counting(10_000, step_s=0.3), update_every_s=0.02)
    assert next(reader) == 1
    reader.close()  # cancelled in the middle of a 0.3 s step: the worker is still busy
    first_alive_when_second_started = []

    def second_work(job: Job) -> None:
        first_alive_when_second_started.append(first.thread.is_alive())
        counting(3)(job)

    assert list(Job(time_limit_s=10, slots=slots).run(second_work, update_every_s=0.02))[-1] == 3
    assert first_alive_when_second_started == [False]


def test_a_job_waiting_for_a_slot_can_be_stopped():
    slots = threading.BoundedSemaphore(1)
    busy_reader = Job(time_limit_s=10, slots=slots).run(counting(10_000), update_every_s=0.02)
    next(busy_reader)
    waiting = Job(time_limit_s=10, slots=slots)
    threading.Timer(0.2, waiting.stop.set).start()
    heartbeats = list(waiting.run(counting(3), update_every_s=0.02, heartbeat=True))
    assert heartbeats and set(heartbeats) == {None}  # it could be closed while it waited, and never started
    assert waiting.thread is None
    busy_reader.close()


def test_the_stop_switch_stops_the_work_from_another_thread():
    job = Job(time_limit_s=10)
    threading.Timer(0.1, job.stop.set).start()
    seen = list(job.run(counting(10_000), update_every_s=0.02))
    assert seen and seen[-1] < 10_000
    assert not job.thread.is_alive()


def test_the_deadline_stops_the_work():
    job = Job(time_limit_s=0.2)
    started = time.monotonic()
    *_, last = job.run(counting(10_000), update_every_s=0.02)
    assert job.out_of_time() and last < 10_000
    assert time.monotonic() - started < 2


def test_an_error_in_the_work_reaches_the_reader():
    def failing(job: Job) -> None:
        job.post("half")
        raise HubError("the model ran out of patience")

    with pytest.raises(HubError, match="patience"):
        list(Job(time_limit_s=10).run(failing, update_every_s=0.01))


def test_a_heartbeat_yields_while_nothing_is_posted():
    def silent(job: Job) -> None:
        while not job.should_stop():
            time.sleep(0.01)

    job = Job(time_limit_s=10)
    reader = job.run(silent, update_every_s=0.02, heartbeat=True)
    assert [next(reader) for _ in range(3)] == [None, None, None]  # a caller can be closed before any progress
    reader.close()
    job.thread.join(timeout=1)
    assert not job.thread.is_alive()


def test_stopping_a_visitors_jobs_waits_for_their_last_step_and_leaves_others_running():
    visitors = VisitorJobs()
    ada_job, bob_job = Job(time_limit_s=10), Job(time_limit_s=10)
    with visitors.running("ada", ada_job), visitors.running("bob", bob_job):
        ada = ada_job.run(counting(10_000, step_s=0.2), update_every_s=0.01)
        bob = bob_job.run(counting(10_000, step_s=0.01), update_every_s=0.01)
        next(ada), next(bob)
        assert visitors.stop("ada") == [ada_job]  # Stop pressed in the middle of a 0.2 s step
        assert not ada_job.thread.is_alive()  # it returned once the step ended, so its progress is final
        final = ada_job.progress
        assert not bob_job.stop.is_set() and bob_job.thread.is_alive()
        time.sleep(0.3)
        assert ada_job.progress == final
        bob.close()
        ada.close()
    assert visitors.stop("ada") == []  # its jobs are forgotten once they end


def test_stop_switches_reach_every_job_of_one_visitor_only():
    switches = StopSwitches()
    with switches.switch("ada") as first, switches.switch("ada") as second, switches.switch("bob") as other:
        switches.stop_all("ada")
        assert first.is_set() and second.is_set() and not other.is_set()
    switches.stop_all("ada")  # nothing running: nothing to do


def test_the_visitor_store_keeps_the_newest_and_says_when_one_was_dropped():
    dropped = []
    store = VisitorStore(capacity=2, ttl_s=60, missing="train first", dropped="it was removed", on_drop=dropped.append)
    store.put("a", "model a")
    store.put("b", "model b")
    store.put("c", "model c")
    assert (store.get("b"), store.get("c"), len(store)) == ("model b", "model c", 2)
    assert dropped == ["model a"]
    with pytest.raises(HubError, match="removed"):
        store.get("a")
    with pytest.raises(HubError, match="train first"):
        store.get("nobody")
    store.put("b", "model b2")  # a visitor's new object replaces their old one
    assert store.get("b") == "model b2" and dropped == ["model a", "model b"]


def test_the_visitor_store_forgets_objects_past_their_time_to_live():
    store = VisitorStore(capacity=8, ttl_s=0.05, missing="train first", dropped="it expired")
    store.put("a", 1)
    time.sleep(0.1)
    with pytest.raises(HubError, match="expired"):
        store.get("a")
