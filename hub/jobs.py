"""Long jobs: a blocking library call (GPT-2's generation, a diffusion pipeline, a training loop) run from a worker
thread, which hands its torch work to the model thread (hub.model_thread) a step at a time, its progress read at a
bounded rate, and stopped on Stop, on a client's cancel, when the visitor leaves and
at a time limit.

    job = Job(time_limit_s=180)
    for progress in job.run(lambda job: work(job), name="generate"):
        yield show(progress)  # closing this loop (Stop, cancel, the visitor left) stops the work

The work calls `job.post(progress)` as it goes (cheap: nobody is woken) and checks `job.should_stop()` between
steps. The reader looks at the latest progress every `update_every_s`: each wake-up would take the GIL from the
worker, and each update costs the browser a render.

Closing the reader never waits for the worker: Gradio closes it on its event loop, which must not block for a
step. A job given `slots` (a semaphore shared by one demo's jobs) holds a slot until its worker has really ended,
so a cancelled job still finishing its step counts against the demo's limit and the next one waits for it.
"""

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hub import model_thread

# Worker threads running now; tests read it to check that a stopped job really ends.
running_jobs: set[threading.Thread] = set()


def _find_malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory that a finished job freed back to the system. glibc keeps freed blocks in its per-thread arenas
    (hundreds of MB after one large image or training run), so without this the server never shrinks again."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class Job:
    """One run of a blocking call: a stop switch, a deadline, and the latest progress the work posted."""

    def __init__(
        self, time_limit_s: float, stop: threading.Event | None = None, slots: threading.Semaphore | None = None
    ):
        self.stop = stop or threading.Event()
        self.slots = slots
        self.time_limit_s = time_limit_s
        self.deadline = time.monotonic() + time_limit_s
        self.progress: Any = None
        self.posts = 0  # how many times progress was posted: the reader yields only what is new
        self.thread: threading.Thread | None = None
        self.shown: Any = None  # the latest update its caller showed: a Stop handler reads it (VisitorJobs)

    def post(self, progress: Any) -> None:
        self.progress = progress
        self.posts += 1

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        """What the work checks between its steps. Work running whole on the model thread (run(...,
        on_model_thread=True)) lets the requests that came meanwhile run here, so they wait one step, not the job."""
        if model_thread.is_model_thread():
            model_thread.serve_waiting()
        return self.stop.is_set() or self.out_of_time()

    def run(
        self,
        work: Callable[["Job"], Any],
        name: str = "job",
        update_every_s: float | Callable[[], float] = 0.1,
        heartbeat: bool = False,
        on_model_thread: bool = False,
    ) -> Iterator[Any]:
        """Run `work(self)` in a worker thread; yield the latest progress when it changed, at most every
        `update_every_s` (with `heartbeat`, on every tick even when it did not, so that a caller that shows nothing
        until the end can still be closed by a cancel or a visitor who leaves). The last progress is always
        yielded once the work ends; an error raised by the work is raised here. Closing the iterator stops the
        work at its next check (without waiting for it). `update_every_s` may be a function, asked before each
        wait: a busy hub can look less often."""
        interval = update_every_s if callable(update_every_s) else lambda: update_every_s
        if model_thread.is_model_thread():  # its reader would wait for work that can only run where it waits
            raise RuntimeError("A job's reader waits for the model thread: mark its handler off_model_thread.")
        done = threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                # A training loop or generation that is one blocking call runs whole on the model thread; each
                # should_stop() between its steps serves the others there.
                model_thread.run(work, self) if on_model_thread else work(self)
            except BaseException as error:  # handed to the reader, which raises it in the request's thread
                failure.append(error)
            finally:
                release_freed_memory()
                running_jobs.discard(thread)
                if self.slots is not None:
                    self.slots.release()
                done.set()

        if self.slots is not None:
            while not self.slots.acquire(timeout=interval()):  # a stopped job may still be ending its step
                if self.should_stop():
                    return
                if heartbeat:
                    yield None
        thread = self.thread = threading.Thread(target=target, name=name, daemon=True)
        running_jobs.add(thread)
        thread.start()
        seen = 0
        try:
            while not done.wait(interval()):
                if self.posts != seen or heartbeat:
                    seen = self.posts
                    yield self.progress
            if failure:
                raise failure[0]
            if self.posts != seen:
                yield self.progress
        finally:
            self.stop.set()  # Stop, a cancel or a visitor who left closed the reader: the work ends at its next check


class VisitorJobs:
    """The jobs each visitor is running, so that their Stop button can end them, wait for their last step and say
    where they stopped (a cancel alone closes the reader without waiting, and leaves nothing to say it)."""

    def __init__(self):
        self._jobs: dict[str, list[Job]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def running(self, session: str, job: Job) -> Iterator[Job]:
        with self._lock:
            self._jobs.setdefault(session, []).append(job)
        try:
            yield job
        finally:
            with self._lock:
                jobs = self._jobs.get(session, [])
                if job in jobs:
                    jobs.remove(job)
                if not jobs:
                    self._jobs.pop(session, None)

    def stop(self, session: str, wait_s: float = 5.0) -> list[Job]:
        """Stop every job of this visitor and wait (at most `wait_s`) until their workers have ended; the stopped
        jobs, oldest first."""
        if model_thread.is_model_thread():  # the jobs' last steps would wait for it to return
            raise RuntimeError("Stopping jobs waits for the model thread: mark the handler off_model_thread.")
        with self._lock:
            jobs = list(self._jobs.get(session, []))
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + wait_s
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
        return jobs
