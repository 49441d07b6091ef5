"""What every benchmark shares: serving an app on loopback, timing calls, and the do-nothing round trip
that Gradio itself costs (measured in the same run, so ratios compare like with like).

What is compared with what: the hub runs in a server process of its own (bench.serve_hub), as visitors meet it; the
do-nothing round trip is served by another process (bench.echo_server); the bare library calls run in the
benchmark's own process, in its main thread, the only thread there that ever runs torch, as a plain script runs
them. A second thread running torch in the same process would slow both down (libgomp, see hub.model_thread)."""

import atexit
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# One private temp folder for the run, removed at exit: Gradio's files, and gradio_client's per-download folders.
_TEMP = tempfile.mkdtemp(prefix="hub-bench-")
atexit.register(shutil.rmtree, _TEMP, ignore_errors=True)
os.environ.update(GRADIO_TEMP_DIR=os.path.join(_TEMP, "gradio"), TMPDIR=_TEMP)
tempfile.tempdir = None  # read TMPDIR again
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
import httpx  # noqa: E402
from gradio_client import Client  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeat` runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def served(app: gr.Blocks) -> Iterator[Client]:
    """Serve a Blocks app on loopback and yield a gradio_client for it."""
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        yield Client(url, verbose=False)
    finally:
        app.close()


@contextlib.contextmanager
def server_process(module: str, *args: str) -> Iterator[dict]:
    """Run `python -m module args` (a server that prints one JSON line with its "url" once it serves) and yield
    that line; the server is ended on exit."""
    # The server serves until its stdin closes: when this process ends, however it ends, so does the server.
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        for line in process.stdout:
            if line.startswith("{"):
                yield json.loads(line)
                break
        else:
            raise RuntimeError(f"{module} ended without serving (exit code {process.wait()})")
    finally:
        process.stdin.close()
        process.wait(timeout=60)


class BrowserClient:
    """Calls a Gradio app as a browser's page (or curl) does: POST `/gradio_api/call/<name>`, then its server-sent
    events read as they arrive, over one connection kept open (a page is open before its button is pressed); a file
    is uploaded first (`POST /gradio_api/upload`), as a page uploads the image a visitor picks.

    The benchmarks of single requests use this rather than gradio_client: while waiting for a result,
    gradio_client's `predict` checks for it every millisecond, which took 56 ms of CPU per 130 ms BERT request on a
    2-core machine, a core the server's two torch threads then shared: the hub's forward pass measured 54-60 ms
    against 34 ms with this client (hub.model_thread's libgomp note says why a busy core hurts so much)."""

    def __init__(self, url: str):
        self.url, self.http = url, httpx.Client(timeout=600)
        # A page's requests share its session; without one, Gradio sets up a new session (the state of every block
        # of the app) for each request: 5 ms a request on a two-tab hub.
        self.session_hash = uuid.uuid4().hex

    def upload(self, path: str | Path) -> dict:
        """Upload a file; what an endpoint's file input takes (Gradio's FileData)."""
        with open(path, "rb") as file:
            response = self.http.post(f"{self.url}gradio_api/upload", files={"files": (Path(path).name, file)})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}

    def events(self, api_name: str, *data: object) -> Iterator[tuple[str, str]]:
        """One request's server-sent events as they arrive: (event, data) pairs, "generating" ones while it streams,
        then "complete" or "error"."""
        body = {"data": list(data), "session_hash": self.session_hash}
        posted = self.http.post(f"{self.url}gradio_api/call/{api_name}", json=body)
        posted.raise_for_status()
        with self.http.stream("GET", f"{self.url}gradio_api/call/{api_name}/{posted.json()['event_id']}") as stream:
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    yield event, line[len("data: ") :]
                    if event in ("complete", "error"):
                        return

    def call(self, api_name: str, *data: object) -> list:
        """One request; its outputs. A failed one raises, with Gradio's message."""
        for event, payload in self.events(api_name, *data):
            if event == "error":
                raise RuntimeError(f"/{api_name}: {payload}")
            if event == "complete":
                return json.loads(payload)
        raise RuntimeError(f"/{api_name}: the stream ended without a result")

    def close(self) -> None:
        self.http.close()


def browser_round_trip(repeat: int = 20) -> float:
    """Seconds Gradio's own round trip costs for a text request that does nothing, called as a browser calls it
    (BrowserClient), served by a process of its own."""
    with server_process("bench.echo_server") as info:
        client = BrowserClient(info["url"])
        try:
            return median_seconds(lambda: client.call("echo", "x"), repeat=repeat, warmup=3)
        finally:
            client.close()


def do_nothing_round_trip(repeat: int = 20) -> float:
    """Seconds Gradio's own round trip costs for a request that does nothing (gradio_client, loopback), served by
    a process of its own."""
    with server_process("bench.echo_server") as info:
        client = Client(info["url"], verbose=False)
        return median_seconds(lambda: client.predict("x", api_name="/echo"), repeat=repeat, warmup=3)


def alternate(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each call, timed in turns (a, b, c, a, b, c, ...) so that load from other programs on the
    machine falls on all of them alike; one untimed warm-up round first."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def within_target(hub_s: float, bare_s: float, round_trip_s: float) -> bool:
    """DESIGN.md's target: a request costs at most 1.1 x bare + the do-nothing round trip + 20 ms."""
    return hub_s <= 1.1 * bare_s + round_trip_s + 0.020


def markdown_table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name, printed beside every benchmark: absolute times mean little across machines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
