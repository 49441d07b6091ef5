"""What every benchmark shares: serving an app on loopback, timing calls, and the do-nothing round trip
that Gradio itself costs (measured in the same run, so ratios compare like with like)."""

import atexit
import contextlib
import os
import platform
import shutil
import socket
import statistics
import tempfile
import time
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


def do_nothing_round_trip(repeat: int = 20) -> float:
    """Seconds Gradio's own round trip costs for a request that does nothing (gradio_client, loopback)."""
    with gr.Blocks() as app:
        box = gr.Textbox()
        box.submit(lambda text: text, box, box, api_name="echo")
    with served(app) as client:
        return median_seconds(lambda: client.predict("x", api_name="/echo"), repeat=repeat, warmup=3)


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
