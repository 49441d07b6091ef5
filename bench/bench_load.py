"""Load: 1, 4 and 16 visitors at once on each endpoint of the hub, served in its own process on loopback.

For each endpoint and each number of visitors N, N visitors (threads, each with its own HTTP connection, on
Gradio's REST route /gradio_api/call/<endpoint>, which goes through the same queue as the page) are released
together and share the endpoint's bounded count of requests, each making its share one after another. A hard
deadline per level stops what is left (nothing more is sent, unfinished requests are cut). Reported per endpoint and
level: answers (checked for real content, not only received), requests/s, p50/p95 latency, and the throughput
against one visitor alone (the first level), so the table shows what serving visitors together gains; also clean
"queue is full" refusals (Gradio's queue holds --queue-size waiting requests), other errors, and the server's
memory (RSS) before, at its peak and after.

The target is only ever 127.0.0.1: the bench starts the hub itself and never calls another address.
Run: python -m bench.bench_load [--preset tiny|full-size|available] [--only fill_mask,classify_image]
[--visitors 1,4,16] [--requests M] [--deadline S]. `full-size` serves random-weight models of the default
architectures at full size; `available` starts the hub without the tiny preset, offline, so each demo loads its real
model where it is in the local cache (or a --model folder). An endpoint whose model cannot be loaded is skipped with
the hub's message. The default endpoints are the three that serve visitors together (fill_mask, classify_image,
zero_shot); --only adds the others.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image

from bench.load_endpoints import BATCHED, ENDPOINTS, LEVELS, PHOTO, Endpoint

HOST = "127.0.0.1"  # loopback only: the load test never targets another address


# ---------------------------------------------------------------------------------------------------------
# Visitors


@dataclass
class Outcome:
    kind: str  # "answer", "wrong answer", "queue full", "error", "deadline" (cut or never sent)
    seconds: float | None = None  # from submit to the final answer
    answer: Any = None
    message: str = ""
    ended: float = field(default_factory=time.perf_counter)  # when the outcome was known


@dataclass
class LoadResult:
    endpoint: str
    visitors: int
    requests: int
    outcomes: list[Outcome]
    seconds: float  # from the visitors' release to the last outcome
    rss_mb: tuple[float, float, float] | None = None  # server memory before, peak, after
    cpu_s: tuple[float, float] = (0.0, 0.0)  # CPU seconds of the server and of the visitors' process, while loaded

    def count(self, kind: str) -> int:
        return sum(outcome.kind == kind for outcome in self.outcomes)

    @property
    def latencies(self) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.kind == "answer")

    @property
    def requests_per_s(self) -> float:
        return self.count("answer") / self.seconds if self.seconds > 0 else 0.0

    def messages(self) -> list[str]:
        """Each distinct error message once, with how often it came."""
        found = Counter(f"{o.kind}: {o.message}" for o in self.outcomes if o.kind in ("error", "wrong answer"))
        return [f"{n} x {message}" for message, n in found.items()]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of values already sorted."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)] if sorted_values else float("nan")


def full_arguments(url: str, endpoint: Endpoint) -> list:
    """The endpoint's arguments with its own defaults after them: the REST route takes every input."""
    info = httpx.get(f"{url}gradio_api/info", timeout=60).raise_for_status().json()
    parameters = info["named_endpoints"][endpoint.api_name]["parameters"]
    return [*endpoint.arguments, *(p["parameter_default"] for p in parameters[len(endpoint.arguments) :])]


class Visitor:
    """One visitor on Gradio's REST route (POST /gradio_api/call/<endpoint>, then its event stream), with its own
    HTTP connection. Lighter on the client side than a gradio_client.Client, so the CPU goes to the server."""

    def __init__(self, url: str, download_dir: str) -> None:
        self.url, self.download_dir = url, Path(download_dir)
        # No read timeout of its own: a visitor waits as a browser would; the deadline bounds every wait instead.
        self.http = httpx.Client(base_url=f"{url}gradio_api/", timeout=httpx.Timeout(60.0, read=None))

    def upload(self, path: str) -> dict:
        with open(path, "rb") as file:
            response = self.http.post("upload", files={"files": file}).raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    def download(self, answer: Any) -> Any:
        """A file in the answer is fetched (from this server only), as a browser shows it; its local path is kept."""
        if not (isinstance(answer, dict) and answer.get("meta", {}).get("_type") == "gradio.FileData"):
            return answer
        if not answer["url"].startswith(self.url):
            raise ValueError(f"the answer points away from the hub: {answer['url']}")
        path = self.download_dir / f"{uuid.uuid4().hex}-{Path(answer['path']).name}"
        path.write_bytes(self.http.get(answer["url"]).raise_for_status().content)
        return str(path)

    def ask(self, endpoint: Endpoint, arguments: list, photo: str, deadline: float) -> Outcome:
        """One request, waiting at most until the deadline (then the visitor hangs up)."""
        start = time.perf_counter()
        name = endpoint.api_name.lstrip("/")
        try:
            data = [self.upload(photo) if argument == PHOTO else argument for argument in arguments]
            response = self.http.post(f"call/{name}", json={"data": data})
            if response.status_code == 503:  # Gradio's queue holds its maximum: a clean refusal
                return Outcome("queue full", message=response.json().get("detail", ""))
            event_id = response.raise_for_status().json()["event_id"]
            wait = httpx.Timeout(60.0, read=max(0.01, deadline - time.monotonic()))
            updates, event = [], None
            with self.http.stream("GET", f"call/{name}/{event_id}", timeout=wait) as stream:
                for line in stream.iter_lines():
                    if time.monotonic() > deadline:
                        return Outcome("deadline", message="still running at the deadline: hung up")
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event in ("generating", "complete", "error"):
                        data = json.loads(line.removeprefix("data: "))
                        if event == "error":
                            message = data.get("error") if isinstance(data, dict) else data
                            return Outcome("error", message=str(message)[:200])
                        updates.append(data[0])  # the first output; gr.State outputs come as null
                        if event == "complete":
                            break
            if event != "complete":
                return Outcome("error", message="the event stream ended without an answer")
            answer = self.download(updates[-1])
        except httpx.TimeoutException:
            return Outcome("deadline", message="still running at the deadline: hung up")
        except Exception as error:  # a connection or protocol failure: counted, and the visitor goes on
            return Outcome("error", message=f"{type(error).__name__}: {str(error)[:160]}")
        seconds = time.perf_counter() - start
        wrong = endpoint.check(updates if endpoint.streaming else answer)
        return Outcome("wrong answer", seconds, answer, wrong) if wrong else Outcome("answer", seconds, answer)


def visit(url: str, endpoint: Endpoint, arguments: list, photo: str, requests: int, start: threading.Barrier,
          deadline: list[float], download_dir: str, outcomes: list[Outcome]) -> None:  # fmt: skip
    """One visitor: waits for the others, then makes its requests one after another."""
    visitor = Visitor(url, download_dir)
    try:
        start.wait()
        for _ in range(requests):
            if time.monotonic() >= deadline[0]:
                outcomes.append(Outcome("deadline", message="not sent: the deadline had passed"))
            else:
                outcomes.append(visitor.ask(endpoint, arguments, photo, deadline[0]))
    except threading.BrokenBarrierError:
        pass
    finally:
        visitor.http.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (psutil comes with accelerate, a dependency of the hub)."""
    return psutil.Process(pid).memory_info().rss / 2**20


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, all its threads together."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_load(url: str, endpoint: Endpoint, visitors: int, requests: int, deadline_s: float, photo: str = "",
             server_pid: int | None = None, download_dir: str | None = None) -> LoadResult:  # fmt: skip
    """`visitors` at once, `requests` each, all of it over within deadline_s after they are released (plus the
    time to cancel what is still running). server_pid: whose memory to sample (default: this process)."""
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"the load test only calls {HOST}, not {url}")
    pid = server_pid or os.getpid()
    download_dir = download_dir or tempfile.mkdtemp(prefix="bench-load-")
    arguments = full_arguments(url, endpoint)
    outcomes: list[Outcome] = []  # list.append is atomic: the visitor threads share it
    deadline, began, cpu_at_start = [math.inf], [0.0], [0.0, 0.0]

    def release() -> None:  # the clock starts once every visitor is ready
        began[0], deadline[0] = time.perf_counter(), time.monotonic() + deadline_s
        cpu_at_start[:] = cpu_seconds(pid), time.process_time()

    start = threading.Barrier(visitors + 1, action=release, timeout=120)
    threads = [
        threading.Thread(
            target=visit,
            args=(url, endpoint, arguments, photo, requests, start, deadline, download_dir, outcomes),
            daemon=True,  # a visitor stuck past the deadline never keeps the bench alive
        )
        for _ in range(visitors)
    ]
    for thread in threads:
        thread.start()
    before = peak = rss_mb(pid)
    start.wait()
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline[0] + 10:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.25)
    seconds = max((o.ended for o in outcomes), default=began[0]) - began[0]
    after = rss_mb(pid)
    cpu = (cpu_seconds(pid) - cpu_at_start[0], time.process_time() - cpu_at_start[1])
    missing = visitors * requests - len(outcomes)  # visitors still stuck 10 s past the deadline
    outcomes += [Outcome("deadline", message="no outcome 10 s after the deadline")] * max(0, missing)
    memory = (before, max(peak, after), after)
    return LoadResult(endpoint.api_name, visitors, requests, list(outcomes), seconds, memory, cpu)


# ---------------------------------------------------------------------------------------------------------
# The hub in its own process


def start_hub(
    port: int, preset: str, dtype: str, queue_size: int | None, models: list[str], log: Path
) -> subprocess.Popen:
    command = [sys.executable, "-m", "hub", "run", "--host", HOST, "--port", str(port), "--offline", "--dtype", dtype]
    command += ["--preset", "tiny"] if preset == "tiny" else []
    command += ["--queue-size", str(queue_size)] if queue_size else []
    for model in models:
        command += ["--model", model]
    say("hub: " + " ".join(command[1:]))
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)


def build_full_size(folder: Path) -> list[str]:
    """Random-weight models of the default architectures at full size, built as the other benchmarks build them
    (same arithmetic as the real ones, no download): GPT-2 124M, BERT base, ViT-B/16, CLIP ViT-B/32."""
    from bench.bench_language import build_full_size_models
    from bench.bench_vision import save_random_clip, save_random_vit

    models = build_full_size_models(folder)
    for demo_id, save in (("image-classification", save_random_vit), ("zero-shot", save_random_clip)):
        (folder / demo_id).mkdir(parents=True)
        save(folder / demo_id)
        models[demo_id] = str(folder / demo_id)
    return [f"{demo_id}={path}" for demo_id, path in models.items()]


def wait_until_served(url: str, hub: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    stop = time.monotonic() + timeout_s
    while time.monotonic() < stop:
        if hub.poll() is not None:
            sys.exit(f"the hub exited with code {hub.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}config", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    sys.exit(f"the hub did not serve within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def warm_up(url: str, endpoint: Endpoint, photo: str, download_dir: str, timeout_s: float) -> str | None:
    """One request first, not counted: it loads the model. Returns why the endpoint cannot be measured, or None."""
    visitor = Visitor(url, download_dir)
    try:
        outcome = visitor.ask(endpoint, full_arguments(url, endpoint), photo, time.monotonic() + timeout_s)
    finally:
        visitor.http.close()
    return None if outcome.kind == "answer" else f"{outcome.kind}: {outcome.message}"


def server_is_idle(url: str, pid: int, timeout_s: float = 60) -> bool:
    """Wait until nothing waits in Gradio's queue and the server's CPU is quiet (what was cut has stopped)."""
    stop = time.monotonic() + timeout_s
    while time.monotonic() < stop:
        used = cpu_seconds(pid)
        time.sleep(1)
        waiting = httpx.get(f"{url}gradio_api/queue/status", timeout=30).json()["queue_size"]
        if waiting == 0 and cpu_seconds(pid) - used < 0.3:
            return True
    return False


STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {message}", flush=True)


def load_average() -> str:
    return ", ".join(f"{load:.1f}" for load in os.getloadavg())


def measure_levels(url: str, endpoint: Endpoint, levels: list[int], requests: int, deadline_s: float, photo: str = "",
                   server_pid: int | None = None, download_dir: str | None = None) -> list[tuple[LoadResult, dict]]:  # fmt: skip
    """Each level of visitors at once with its table row, each level sharing `requests` among its visitors; the
    first level's requests/s is the baseline of the "x one visitor" column (levels start at 1 for that reason)."""
    measured, alone = [], None
    for visitors in levels:
        each = max(1, requests // visitors)
        result = run_load(url, endpoint, visitors, each, deadline_s, photo, server_pid, download_dir)
        alone = alone or result.requests_per_s
        measured.append((result, row(result, alone)))
        if server_pid and not server_is_idle(url, server_pid):
            measured[-1][1]["errors"] = f"{measured[-1][1]['errors']} (the server was still busy 60 s later)"
    return measured


def row(result: LoadResult, alone_per_s: float | None) -> dict:
    latencies = result.latencies
    before, peak, after = result.rss_mb
    return {
        "endpoint": f"`{result.endpoint}`",
        "visitors": result.visitors,
        "requests": result.visitors * result.requests,
        "answers": result.count("answer"),
        "requests/s": f"{result.requests_per_s:.{1 if result.requests_per_s >= 1 else 2}f}",
        "x one visitor": f"{result.requests_per_s / alone_per_s:.2f}" if alone_per_s else "-",
        "p50 s": f"{percentile(latencies, 0.5):.2f}",
        "p95 s": f"{percentile(latencies, 0.95):.2f}",
        "queue full": result.count("queue full"),
        "errors": result.count("error") + result.count("wrong answer"),
        "cut by deadline": result.count("deadline"),
        "server MiB before / peak / after": f"{before:.0f} / {peak:.0f} / {after:.0f}",
        "CPU s server / visitors": f"{result.cpu_s[0]:.0f} / {result.cpu_s[1]:.0f}",
    }


def main() -> None:
    # First: the bench's private temp folder and offline settings, which the hub process inherits.
    from bench.common import cpu_name, free_port, markdown_table
    from hub.device import pick_device, resolve_dtype
    from hub.images import example_photos

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        choices=["tiny", "full-size", "available"],
        default="tiny",
        help="tiny: the hub's tiny preset; full-size: random-weight models of the default architectures at full "
        "size (text to image is skipped: see bench_text_to_image); available: whatever is in the local cache",
    )
    parser.add_argument("--only", help=f"comma-separated endpoints [{','.join(BATCHED)}]; all: {','.join(ENDPOINTS)}")
    parser.add_argument(
        "--visitors", default=",".join(map(str, LEVELS)), help="visitors at once, per level, from 1 [%(default)s]"
    )
    parser.add_argument("--requests", type=int, help="requests per level, shared by its visitors [per endpoint]")
    parser.add_argument("--deadline", type=float, default=60, help="seconds per level [%(default)s]")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--queue-size", type=int, help="the hub's queue size [the hub's default]")
    parser.add_argument("--model", action="append", default=[], metavar="DEMO=DIR", help="passed on to the hub")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else BATCHED
    levels = [int(n) for n in args.visitors.split(",")]
    if levels[0] != 1 or any(n < 1 for n in levels):
        parser.error("--visitors starts with 1 (the baseline), e.g. 1,4,16")
    if unknown := set(names) - set(ENDPOINTS):
        parser.error(f"unknown endpoint(s): {', '.join(sorted(unknown))}")

    dtype = str(resolve_dtype(args.dtype, pick_device())).replace("torch.", "")  # the hub gets it resolved
    load_at_start = load_average()
    say(f"CPU: {cpu_name()}, {os.cpu_count()} cores; dtype {dtype}; preset {args.preset}; load {load_at_start}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-load-"))  # inside the bench's temp folder, removed at exit
    photo = scratch / "cat.jpg"
    Image.fromarray(example_photos()[0]).save(photo, quality=95)  # 451 x 300, like a photo from a phone, smaller
    models = args.model
    if args.preset == "full-size":
        say("building random-weight full-size models ...")
        models = build_full_size(scratch / "models") + models
    port = free_port()
    url, log = f"http://{HOST}:{port}/", scratch / "hub.log"
    hub = start_hub(port, args.preset, dtype, args.queue_size, models, log)
    rows, notes = [], []
    try:
        wait_until_served(url, hub, log)
        say(f"served at {url}; server memory {rss_mb(hub.pid):.0f} MiB")
        for name in names:
            endpoint = ENDPOINTS[name]
            say(f"{endpoint.api_name}: warm-up ...")
            if why := warm_up(url, endpoint, str(photo), str(scratch), args.deadline):
                say(f"{endpoint.api_name}: skipped, {why}")
                notes.append(f"`{endpoint.api_name}` skipped: {why}")
                continue
            measured = measure_levels(
                url, endpoint, levels, args.requests or endpoint.requests, args.deadline, str(photo), hub.pid,
                str(scratch),
            )  # fmt: skip
            for result, result_row in measured:
                rows.append(result_row)
                notes += [f"`{endpoint.api_name}`, {result.visitors} at once: {m}" for m in result.messages()]
                say(" | ".join(f"{k} {v}" for k, v in result_row.items()))
    finally:
        hub.terminate()
        try:
            hub.wait(timeout=15)
        except subprocess.TimeoutExpired:
            hub.kill()
    print(f"\nCPU: {cpu_name()}; dtype {dtype}; preset {args.preset}; deadline {args.deadline:.0f} s per level")
    print(f"load average at the start {load_at_start}, at the end {load_average()} (other programs count too)\n")
    if rows:
        print(markdown_table(rows))
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
