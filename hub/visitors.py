"""Per-visitor state: who the visitor is (Gradio's session), the stop switches of their running jobs, and a bounded
store of the objects they made (a fine-tuned model), with a capacity and a time to live."""

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr

from hub.errors import HubError

NO_SESSION = "no-session"  # a direct call of a handler (tests, scripts) has no Gradio request

# Gradio's MCP server calls the app through one shared client, so every MCP caller would share its session; the
# hub's MCP server (hub.mcp_server) names each MCP session in this header, signed with a key made at start-up, so
# a header a caller writes itself names nobody.
MCP_VISITOR_HEADER = "x-hub-mcp-visitor"
_SIGNING_KEY = secrets.token_bytes(32)


def sign_visitor(name: str) -> str:
    """The header value that names an MCP session as a visitor."""
    digest = hmac.new(_SIGNING_KEY, name.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{name}.{digest}"


def signed_visitor(value: str | None) -> str | None:
    """The MCP session a header value names, when the hub itself signed it; None otherwise."""
    if not value or "." not in value:
        return None
    name = value.rsplit(".", 1)[0]
    return name if hmac.compare_digest(sign_visitor(name), value) else None


def visitor_key(address: str | None, session_hash: str | None, headers: Any = None) -> str:
    """Who a request is, for everything kept per visitor: their address with their session (a browser tab, a
    gradio_client.Client, an MCP session). A session id alone is not enough: a caller who learns or guesses
    another's id from another address still reaches nothing of theirs."""
    mcp = signed_visitor(headers.get(MCP_VISITOR_HEADER)) if headers is not None else None
    session = f"mcp:{mcp}" if mcp else session_hash or NO_SESSION
    return f"{address}|{session}" if address else session


def session_id(request: gr.Request | None) -> str:
    """The visitor's id (see `visitor_key`): one per browser tab, gradio_client.Client or MCP session, at one
    address."""
    if request is None:
        return NO_SESSION
    return visitor_key(caller_id(request), getattr(request, "session_hash", None), getattr(request, "headers", None))


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
    """Objects kept per visitor, each for `ttl_s` from when it was made (using it does not extend it, so nobody can
    hold a place for hours by calling it); a visitor whose object went is told why, not told they never made one.

    Without a `full` message, the oldest object goes when `capacity` is reached. With one, the places are shared
    fairly between owners (an owner is an address, see `caller_id`; many people may share one): when all are
    taken, a newcomer takes the oldest place of the owner holding the most, if that owner holds at least two more
    than the newcomer's owner would; otherwise `check_room` refuses the newcomer with the `full` message. So a
    visitor whose address holds few places never loses one to someone holding many, and a class behind one
    address keeps its places unless the server runs out of them. `per_owner` optionally caps each owner."""

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        missing: str,
        dropped: str,
        on_drop: Callable[[Any], None] | None = None,
        full: str | None = None,
        per_owner: int | None = None,
        crowded: str | None = None,
    ):
        self.capacity, self.ttl_s = capacity, ttl_s
        self.missing, self.dropped = missing, dropped  # the messages for "never made one" and "its time was up"
        self.full, self.per_owner = full, per_owner  # "{minutes}" in `full` becomes the wait for the next free place
        self.crowded = crowded or dropped  # the message for "it made room for a visitor of a smaller owner"
        self.on_drop = on_drop  # e.g. delete the files the object left on disk
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # oldest first
        self._owners: dict[str, str | None] = {}
        self._dropped: OrderedDict[str, str] = OrderedDict()  # session -> why its object went, newest last
        self._lock = threading.Lock()

    def _drop(self, session: str, why: str) -> None:
        _, item = self._items.pop(session)
        self._owners.pop(session, None)
        if self.on_drop:
            self.on_drop(item)
        self._dropped[session] = why
        while len(self._dropped) > 10 * self.capacity:
            self._dropped.popitem(last=False)

    def _expire(self, now: float) -> None:
        for session, (made, _) in list(self._items.items()):
            if now - made > self.ttl_s:
                self._drop(session, self.dropped)

    def _owned(self, owner: str | None, besides: str) -> list[str]:
        """The owner's other sessions, oldest first."""
        if owner is None:
            return []
        return [s for s in self._items if s != besides and self._owners.get(s) == owner]

    def _make_room_from(self, owner: str | None) -> str | None:
        """The session whose place a newcomer of `owner` may take when all are taken: the oldest of the owner
        holding the most, when it holds at least two more than `owner` would with the newcomer; else None."""
        counts: dict[str | None, int] = {}
        for session in self._items:
            counts[self._owners.get(session)] = counts.get(self._owners.get(session), 0) + 1
        largest = max(counts, key=lambda o: counts[o], default=None)
        if largest is None or counts[largest] <= counts.get(owner, 0) + 1:
            return None
        return next(s for s in self._items if self._owners.get(s) == largest)

    def _has_room(self, session: str, owner: str | None) -> bool:
        replaces_own = session in self._items or (
            self.per_owner is not None and len(self._owned(owner, session)) >= self.per_owner
        )
        return replaces_own or len(self._items) < self.capacity or self._make_room_from(owner) is not None

    def check_room(self, session: str, owner: str | None = None) -> None:
        """Raise the `full` message when a new object from this visitor could not be kept; call it before the
        work that makes the object."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            if self.full is None or self._has_room(session, owner):
                return
            raise HubError(self._full_message(now))

    def _full_message(self, now: float) -> str:
        oldest = min(made for made, _ in self._items.values())
        return self.full.format(minutes=max(1, round((oldest + self.ttl_s - now) / 60)))

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
                self._drop(owned.pop(0), self.crowded)
            if len(self._items) >= self.capacity:
                if self.full is None:
                    self._drop(next(iter(self._items)), self.crowded)
                elif (room := self._make_room_from(owner)) is not None:
                    self._drop(room, self.crowded)
                else:  # another visitor took the last place while this one's object was being made
                    if self.on_drop:
                        self.on_drop(item)
                    raise HubError(self._full_message(now))
            self._items[session] = (now, item)
            self._owners[session] = owner
            self._dropped.pop(session, None)

    def get(self, session: str) -> Any:
        with self._lock:
            self._expire(time.monotonic())
            if session in self._items:
                return self._items[session][1]
            raise HubError(self._dropped.get(session, self.missing))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def caller_id(request: gr.Request | None) -> str | None:
    """Who is calling, as far as a server can tell: the client's IP address. The server (uvicorn) has already
    replaced a trusted proxy's address with the one it appended to X-Forwarded-For (see --forwarded-allow-ips);
    a header from anyone else is ignored, so a client cannot take someone else's address."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)
