"""Per-visitor state: who the visitor is (Gradio's session), the stop switches of their running jobs, and a bounded
store of the objects they made (a fine-tuned model), with a capacity and a time to live."""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr

from hub.errors import HubError

NO_SESSION = "no-session"  # a direct call of a handler (tests, scripts) has no Gradio request


def session_id(request: gr.Request | None) -> str:
    """The visitor's id: one per browser tab, and one per gradio_client.Client."""
    return getattr(request, "session_hash", None) or NO_SESSION


class StopSwitches:
    """The stop switch of every job a visitor is running, so that their Stop button reaches the job's thread."""

    def __init__(self):
        self._switches: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def switch(self, session: str) -> Iterator[threading.Event]:
        """A new switch for one job of this visitor, forgotten when the job ends."""
        stop = threading.Event()
        with self._lock:
            self._switches.setdefault(session, set()).add(stop)
        try:
            yield stop
        finally:
            with self._lock:
                switches = self._switches.get(session, set())
                switches.discard(stop)
                if not switches:
                    self._switches.pop(session, None)

    def stop_all(self, session: str) -> None:
        with self._lock:
            for stop in self._switches.get(session, ()):
                stop.set()


class VisitorStore:
    """Objects kept per visitor. Past `capacity` the least recently stored goes first, and past `ttl_s` without
    use an object is dropped; a visitor whose object was dropped is told so, not told they never made one."""

    def __init__(
        self, capacity: int, ttl_s: float, missing: str, dropped: str, on_drop: Callable[[Any], None] | None = None
    ):
        self.capacity, self.ttl_s = capacity, ttl_s
        self.missing, self.dropped = missing, dropped  # the messages for "never made one" and "it was dropped"
        self.on_drop = on_drop  # e.g. delete the files the object left on disk
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._dropped: OrderedDict[str, None] = OrderedDict()  # sessions whose object went, newest last
        self._lock = threading.Lock()

    def _drop(self, session: str) -> None:
        _, item = self._items.pop(session)
        if self.on_drop:
            self.on_drop(item)
        self._dropped[session] = None
        while len(self._dropped) > 10 * self.capacity:
            self._dropped.popitem(last=False)

    def _expire(self, now: float) -> None:
        for session, (used, _) in list(self._items.items()):
            if now - used > self.ttl_s:
                self._drop(session)

    def put(self, session: str, item: Any) -> None:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if session in self._items:  # a visitor's new object replaces their old one
                _, old = self._items.pop(session)
                if self.on_drop and old is not item:
                    self.on_drop(old)
            self._items[session] = (now, item)
            self._dropped.pop(session, None)
            while len(self._items) > self.capacity:
                self._drop(next(iter(self._items)))

    def get(self, session: str) -> Any:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if session in self._items:
                _, item = self._items[session]
                self._items[session] = (now, item)  # in use: its time to live starts again
                return item
            raise HubError(self.dropped if session in self._dropped else self.missing)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
