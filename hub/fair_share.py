"""A fair share of the hub for every caller. Gradio's queue is one pool for everyone: one address could fill it
with jobs whose results it never reads, and every other visitor would get "Queue is full". Here:

- a visitor (a browser tab, a gradio_client.Client, an MCP session: see hub.visitors.visitor_key) has at most
  `jobs_per_visitor` jobs queued or running, and a client address at most `jobs_per_address`; past that, their
  next request is refused at once (HTTP 429, with a message), and everyone else is served as usual;
- a job whose result nobody has started to read `unread_job_s` after it was queued is cancelled (Gradio already
  cancels one whose reader leaves), so queueing work is no way to book the machine;
- once no job is queued or running, the memory the requests freed is handed back to the system (glibc keeps it
  in its per-thread arenas otherwise);
- Gradio sessions unused for `session_idle_min` are forgotten (their number is bounded by launch's
  `state_session_capacity`), so sessionless API calls do not pile up in memory.

    share = FairShare(settings)
    share.install(app)          # after app.queue(), before launch
    share.listening(...)        # called by hub.http_guard while a reader streams results
"""

import asyncio
import datetime
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
from fastapi import HTTPException
from gradio.server_messages import ProcessCompletedMessage

from hub.jobs import release_freed_memory
from hub.settings import Settings
from hub.visitors import visitor_key

log = logging.getLogger(__name__)

TOO_MANY = 429  # HTTP "Too Many Requests"


def address_of(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def event_visitor(event: Any) -> tuple[str | None, str]:
    """(address, visitor) of a queued or running Gradio event."""
    request = event.request
    address = address_of(request)
    return address, visitor_key(address, event.session_hash, getattr(request, "headers", None))


class FairShare:
    def __init__(self, settings: Settings):
        self.per_visitor = settings.jobs_per_visitor
        self.per_address = settings.jobs_per_address
        self.unread_s = settings.unread_job_s
        self.session_idle_s = settings.session_idle_min * 60
        self.unread_message = (
            f"This job was cancelled: nobody had started reading its result {self.unread_s:g} s after it was queued."
        )
        self._readers: Counter[str] = Counter()  # session hashes and event ids whose results are being read
        self._lock = threading.Lock()
        self._watch: asyncio.Task | None = None
        self.app: gr.Blocks | None = None

    # --- who reads what (hub.http_guard reports it) ---

    @contextmanager
    def listening(self, key: str) -> Iterator[None]:
        """While a reader streams the results of a session (its hash) or of one event (its id)."""
        with self._lock:
            self._readers[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._readers[key] -= 1
                if self._readers[key] <= 0:
                    del self._readers[key]

    def is_read(self, event: Any) -> bool:
        with self._lock:
            return self._readers.get(event.session_hash, 0) > 0 or self._readers.get(event._id, 0) > 0

    # --- the queue ---

    def install(self, app: gr.Blocks) -> None:
        """Wrap the app's queue so that each new job is checked against its caller's share."""
        self.app = app
        queue = app._queue
        push = queue.push

        async def fair_push(body: Any, request: Any, username: Any):
            self.check_share(queue, request, body.session_hash)
            self._start_watching()
            return await push(body, request, username)

        queue.push = fair_push

    def pending_events(self, queue: Any) -> list[Any]:
        """Every event queued or running now."""
        events = [event for event_queue in queue.event_queue_per_concurrency_id.values() for event in event_queue.queue]
        events += [event for job in queue.active_jobs if job for event in job]
        return events

    def check_share(self, queue: Any, request: Any, session_hash: str | None) -> None:
        """Refuse (HTTP 429) a caller who already has their share of jobs queued or running."""
        address = address_of(request)
        visitor = visitor_key(address, session_hash, request.headers) if session_hash else None
        by_address = by_visitor = 0
        for event in self.pending_events(queue):
            event_address, event_visitor_key = event_visitor(event)
            by_address += event_address == address
            by_visitor += visitor is not None and event_visitor_key == visitor
        if by_visitor >= self.per_visitor:
            log.info("refused a job: visitor %s has %d queued or running", visitor, by_visitor)
            raise HTTPException(
                TOO_MANY,
                f"You already have {by_visitor} jobs queued or running on this hub, as many as one visitor may: "
                "wait for one to finish (or stop it), then try again.",
            )
        if by_address >= self.per_address:
            log.info("refused a job: address %s has %d queued or running", address, by_address)
            raise HTTPException(
                TOO_MANY,
                f"Your network address already has {by_address} jobs queued or running on this hub, as many as "
                "one address may, so that everyone gets a turn: wait for one to finish, then try again.",
            )

    # --- jobs nobody reads, sessions nobody uses ---

    def _start_watching(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        last_sweep = time.monotonic()
        busy = False
        while self.app is not None and self.app.is_running:
            await asyncio.sleep(min(1.0, self.unread_s / 4))
            try:
                await self.cancel_unread()
                pending = bool(self.pending_events(self.app._queue))
                if busy and not pending:  # idle again: hand what the requests freed back to the system
                    await asyncio.to_thread(release_freed_memory)
                busy = pending
                if time.monotonic() - last_sweep > 60:
                    last_sweep = time.monotonic()
                    self.forget_idle_sessions()
            except Exception:  # the watch must outlive any one surprise
                log.exception("the fair-share watch failed once")

    async def cancel_unread(self) -> None:
        """Cancel every job queued or running for `unread_s` without anyone reading its result."""
        queue = self.app._queue
        now = time.monotonic()
        for event in self.pending_events(queue):
            if now - event.enqueue_time > self.unread_s and not self.is_read(event):
                log.info("cancelled a job nobody reads: %s", event.fn.api_name)
                # a reader who comes late is told why, rather than left waiting for a result that never comes
                queue.send_message(event, ProcessCompletedMessage(output={"error": self.unread_message}, success=False))
                await queue.clean_events(event_id=event._id)

    def forget_idle_sessions(self) -> None:
        """Forget Gradio sessions unused for `session_idle_s` (each keeps a copy of the page's configuration)."""
        holder = getattr(self.app, "state_holder", None) or getattr(
            getattr(self.app, "server_app", None), "state_holder", None
        )
        if holder is None:
            return
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=self.session_idle_s)
        with holder.lock:
            idle = [s for s, used in holder.time_last_used.items() if used < cutoff]
        for session in idle:
            holder.delete_state(session)
            with holder.lock:
                holder.session_data.pop(session, None)
                holder.time_last_used.pop(session, None)
