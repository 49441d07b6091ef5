"""Gradio's REST route, as a hostile caller uses it: unlike gradio_client it can send NaN, Infinity, lone
surrogates and any JSON type."""

import json
import urllib.request
from pathlib import Path


def rest_call(hub_url: str, api_name: str, data: list, session_hash: str | None = None) -> str:
    """POST the data, then read the whole event stream; returns it as text ("event: error" / "event: complete").
    Without a `session_hash` Gradio makes a new session for the call, as for a new visitor."""
    request_body = {"data": data} if session_hash is None else {"data": data, "session_hash": session_hash}
    body = json.dumps(request_body).encode()  # json writes NaN as a bare NaN, as a hostile caller could
    request = urllib.request.Request(f"{hub_url}gradio_api/call/{api_name}", body, {"Content-Type": "application/json"})
    event_id = json.load(urllib.request.urlopen(request))["event_id"]
    return urllib.request.urlopen(f"{hub_url}gradio_api/call/{api_name}/{event_id}").read().decode()


def error_message(answer: str) -> str | None:
    """The message of an "event: error" answer (None when the server hid it behind a generic error)."""
    assert "event: error" in answer, answer[:300]
    payload = answer.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0]
    return json.loads(payload)["error"]


def upload(hub_url: str, path: Path) -> dict:
    """Upload a file as the page does; returns the file data an input slot takes."""
    boundary = "hub-tests-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{hub_url}gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    server_path = json.load(urllib.request.urlopen(request))[0]
    return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
