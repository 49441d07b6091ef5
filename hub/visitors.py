"""Per-visitor state: who the visitor is (Gradio's session), the stop switches of their running jobs, and a bounded
store of the objects they made (a fine-tuned model), with a capacity and a time to live."""

import ipaddress
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
    """Objects kept per visitor, each dropped after `ttl_s` without use; a visitor whose object was dropped is told
    so, not told they never made one.

    Past `capacity`, the least recently used object goes first, unless a `full` message is given: then no object
    goes before its time to live, and `check_room` refuses a newcomer with that message instead (one visitor can
    never push out the others). An owner (e.g. an IP address, see `caller_id`) keeps at most `per_owner` objects:
    their newest replaces their least recently used."""

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        missing: str,
        dropped: str,
        on_drop: Callable[[Any], None] | None = None,
        full: str | None = None,
        per_owner: int | None = None,
    ):
        self.capacity, self.ttl_s = capacity, ttl_s
        self.missing, self.dropped = missing, dropped  # the messages for "never made one" and "it was dropped"
        self.full, self.per_owner = full, per_owner  # "{minutes}" in `full` becomes the wait for the next free place
        self.on_drop = on_drop  # e.g. delete the files the object left on disk
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # least recently used first
        self._owners: dict[str, str | None] = {}
        self._dropped: OrderedDict[str, None] = OrderedDict()  # sessions whose object went, newest last
        self._lock = threading.Lock()

    def _drop(self, session: str) -> None:
        _, item = self._items.pop(session)
        self._owners.pop(session, None)
        if self.on_drop:
            self.on_drop(item)
        self._dropped[session] = None
        while len(self._dropped) > 10 * self.capacity:
            self._dropped.popitem(last=False)

    def _expire(self, now: float) -> None:
        for session, (used, _) in list(self._items.items()):
            if now - used > self.ttl_s:
                self._drop(session)

    def _owned(self, owner: str | None, besides: str) -> list[str]:
        """The owner's other sessions, least recently used first."""
        if owner is None:
            return []
        return [s for s in self._items if s != besides and self._owners.get(s) == owner]

    def check_room(self, session: str, owner: str | None = None) -> None:
        """Raise the `full` message when a new object from this visitor could only be kept by dropping someone
        else's before its time; call it before the work that makes the object."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            replaces_own = session in self._items or (
                self.per_owner is not None and len(self._owned(owner, session)) >= self.per_owner
            )
            if self.full is None or replaces_own or len(self._items) < self.capacity:
                return
            oldest_use = min(used for used, _ in self._items.values())
            minutes = max(1, round((oldest_use + self.ttl_s - now) / 60))
            raise HubError(self.full.format(minutes=minutes))

    def put(self, session: str, item: Any, owner: str | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if session in self._items:  # a visitor's new object replaces their old one
                _, old = self._items.pop(session)
                if self.on_drop and old is not item:
                    self.on_drop(old)
            owned = self._owned(owner, session)
            while self.per_owner is not None and owned and len(owned) >= self.per_owner:
                self._drop(owned.pop(0))
            self._items[session] = (now, item)
            self._owners[session] = owner
            self._dropped.pop(session, None)
            while self.full is None and len(self._items) > self.capacity:
                self._drop(next(iter(self._items)))

    def get(self, session: str) -> Any:
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if session in self._items:
                _, item = self._items.pop(session)
                self._items[session] = (now, item)  # in use: its time to live starts again, and it is the newest
                return item
            raise HubError(self.dropped if session in self._dropped else self.missing)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def caller_id(request: gr.Request | None) -> str | None:
    """Who is calling, as far as a server can tell: the client's IP address. Behind a proxy on this machine or a
    private network (a Space), the address the proxy itself appended to X-Forwarded-For; a header that a client
    wrote is never trusted."""
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    if host is None:
        return None
    try:
        behind_proxy = ipaddress.ip_address(host).is_private
    except ValueError:
        return host
    forwarded = request.headers.get("x-forwarded-for", "") if behind_proxy else ""
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-1] if hops else host
