"""What every HTTP request goes through before Gradio sees it (an ASGI middleware):

- a request body larger than the limit is refused (413) before it is read: from its Content-Length when it gives
  one, else as soon as the bytes read pass the limit; uploads have their own, larger limit;
- results streamed to a reader are reported to hub.fair_share, which cancels jobs that nobody reads;
- messages streamed to a browser page (errors, warnings) have their markup escaped: Gradio's toasts render HTML,
  so a visitor's value quoted in a message (a link parameter, a label, a file's column) must arrive as text.
  API, gradio_client and MCP callers get the same messages as plain text, unescaped.
"""

import html
import json
import re
from typing import Any

from hub.fair_share import FairShare

Scope = dict[str, Any]

UPLOAD_PATH = re.compile(r"/gradio_api/upload/?$")
SESSION_STREAM = re.compile(r"/gradio_api/queue/data/?$")
EVENT_STREAM = re.compile(r"/gradio_api/call/(?:v2/)?[^/]+/([^/]+)/?$")
MESSAGE_KEYS = ("log", "title", "message")  # the texts of a toast ("log": gr.Warning / gr.Info)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def from_browser_page(scope: Scope) -> bool:
    """Browsers mark every request a page makes (Fetch Metadata: Sec-Fetch-Mode, which a page's script cannot
    remove); gradio_client, MCP and curl send none."""
    return header(scope, b"sec-fetch-mode") is not None


def escape_message(message: dict) -> dict:
    """The same Gradio stream message with its human-readable texts escaped for a page."""
    output = message.get("output")
    if isinstance(output, dict) and not message.get("success", True):
        for key in ("error", "title"):
            if isinstance(output.get(key), str):
                output[key] = html.escape(output[key], quote=False)
    if message.get("msg") in ("log", "unexpected_error"):
        for key in MESSAGE_KEYS:
            if isinstance(message.get(key), str):
                message[key] = html.escape(message[key], quote=False)
    return message


def escape_sse_event(event: bytes) -> bytes:
    """One server-sent event ("data: {...}" lines, or "event: error" + "data: ...") with its messages escaped."""
    lines = event.split(b"\n")
    is_error = b"event: error" in lines  # the /call route's form: the error's fields alone, or its text
    for n, line in enumerate(lines):
        if not line.startswith(b"data: "):
            continue
        try:
            payload = json.loads(line[6:])
        except ValueError:
            continue
        if isinstance(payload, dict):
            payload = escape_message(payload)
            if is_error:
                escape_message(payload := {"output": payload, "success": False})
                payload = payload["output"]
        elif is_error and isinstance(payload, str):
            payload = html.escape(payload, quote=False)
        lines[n] = b"data: " + json.dumps(payload).encode()
    return b"\n".join(lines)


class HubGuard:
    """The ASGI middleware; `max_body_bytes` for JSON and MCP calls, `max_upload_bytes` for uploads."""

    def __init__(self, app, max_body_bytes: int, max_upload_bytes: int, share: FairShare | None = None):
        self.app = app
        self.max_body_bytes, self.max_upload_bytes = max_body_bytes, max_upload_bytes
        self.share = share

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            return await self.limit_body(scope, receive, send, path)
        if scope["method"] == "GET":
            key = self.stream_key(scope, path)
            if key is not None:
                if from_browser_page(scope):
                    send = self.escaping(send)
                if self.share is None:
                    return await self.app(scope, receive, send)
                with self.share.listening(key):
                    return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def stream_key(scope: Scope, path: str) -> str | None:
        """The session hash or event id whose results this request streams; None for other requests."""
        if SESSION_STREAM.search(path):
            query = scope.get("query_string", b"").decode("latin-1")
            for part in query.split("&"):
                name, _, value = part.partition("=")
                if name == "session_hash":
                    return value
            return None
        if match := EVENT_STREAM.search(path):
            return match.group(1)
        return None

    # --- bodies ---

    async def limit_body(self, scope: Scope, receive, send, path: str) -> None:
        limit = self.max_upload_bytes if UPLOAD_PATH.search(path) else self.max_body_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            return await self.refuse_body(send, int(declared), limit)
        seen = 0
        too_large = False
        started = False

        async def counted_receive():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # sent without a length, or longer than it said: stop reading here
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if too_large:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            started = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if too_large and not started:
            await self.refuse_body(send, seen, limit)

    @staticmethod
    async def refuse_body(send, size: int, limit: int) -> None:
        body = json.dumps(
            {"detail": f"The request is too large: over {limit / 1e6:g} MB (this one: {size / 1e6:.1f} MB or more)."}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # --- messages to a page ---

    @staticmethod
    def escaping(send):
        """`send`, with each complete server-sent event of the body escaped (events end with a blank line)."""
        pending = b""

        async def escaping_send(message):
            nonlocal pending
            if message["type"] != "http.response.body":
                if message["type"] == "http.response.start":  # the body's length changes
                    message["headers"] = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
                return await send(message)
            pending += message.get("body", b"")
            *events, pending = pending.split(b"\n\n")
            more = message.get("more_body", False)
            if not more and pending:
                events.append(pending)
                pending = b""
            body = b"".join(escape_sse_event(event) + b"\n\n" for event in events)
            await send({"type": "http.response.body", "body": body, "more_body": more})

        return escaping_send
