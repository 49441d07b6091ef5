"""A public Space under a flood, hostile and heavy calls, and a class: the hub (--preset tiny) served in its own
process on loopback, with addresses played through X-Forwarded-For (loopback is a proxy the hub trusts).

- flood: /fill_mask's median time for one caller on the idle hub, then while another address floods
  /fine_tune (64 POSTs at once, results never read) and /generate; and how many of the flood were refused.
- memory: the server's resident memory (RSS) before and after 200 mixed hostile and heavy calls (positional
  encoding at its largest, bodies over the limit, images declaring 49 megapixels sent 16 at once, a CSV header of
  100,000 columns, wrong types), once the hub is idle again.
- classroom: 30 visitors behind one address each fine-tune (tiny model, one epoch) and then use their own model.

Run: python -m bench.bench_public [--skip flood,memory,classroom]. The target is only ever 127.0.0.1.
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from PIL import Image

from bench.common import cpu_name, free_port

SENTENCE = "Paris is the [MASK] of France."
FINE_TUNE = ["Built-in: sentiment of short reviews", None, "text", "label", 1, 2e-4, 8, 32, 0.1, 0.01, False, 0, "ok"]


def request(url: str, path: str, body: bytes | None = None, address: str | None = None, **headers) -> tuple:
    headers = {"Content-Type": "application/json", **headers} | ({"X-Forwarded-For": address} if address else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, body, headers), timeout=300) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError) as error:  # refused and closed before the body was all sent
        return 0, str(error).encode()


def call(url: str, api: str, data: list, address: str | None = None, read: bool = True, **extra) -> str:
    status, body = request(url, f"gradio_api/call/{api}", json.dumps({"data": data, **extra}).encode(), address)
    if status != 200:
        return f"refused {status}"
    if not read:
        return "queued"
    event = json.loads(body)["event_id"]
    return request(url, f"gradio_api/call/{api}/{event}", address=address)[1].decode()


def upload(url: str, name: str, content: bytes) -> dict:
    boundary = "bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = request(
        url, "gradio_api/upload", body, **{"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert status == 200, answer[:200]
    return {"path": json.loads(answer)[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def start_hub(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HUB_CACHE_DIR": str(folder / "cache"), "GRADIO_TEMP_DIR": str(folder / "gradio")}
    command = [sys.executable, "-m", "hub", "--preset", "tiny", "--offline", "--dtype", "float32", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "gradio_api/info", timeout=5)
            return server, url
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("the hub did not start")


def fill_mask_seconds(url: str, address: str, repeat: int = 9) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        assert "event: complete" in call(url, "fill_mask", [SENTENCE, 5], address)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flood(url: str) -> dict:
    call(url, "fill_mask", [SENTENCE, 5])  # warm: the model is loaded
    idle = fill_mask_seconds(url, "198.51.100.1")
    answers: list[str] = []

    def flooder():
        for _ in range(64):
            answers.append(call(url, "fine_tune", FINE_TUNE, "203.0.113.66", read=False))
        for _ in range(16):
            answers.append(call(url, "generate", ["Hi", 200, "sampling", 0.8, 50, 0.95, 1.0, 0], "203.0.113.66", False))

    thread = threading.Thread(target=flooder)
    thread.start()
    thread.join()
    during = fill_mask_seconds(url, "198.51.100.1")
    return {
        "fill_mask idle (s)": round(idle, 3),
        "fill_mask during the flood (s)": round(during, 3),
        "flood requests": len(answers),
        "flood refused at once (429)": sum(a == "refused 429" for a in answers),
    }


def big_png(megapixels: int = 49) -> bytes:
    side = int((megapixels * 1e6) ** 0.5)
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def memory(url: str, server: subprocess.Popen) -> dict:
    process = psutil.Process(server.pid)
    for api, data in (("fill_mask", [SENTENCE, 5]), ("positional_encoding", ["sinusoidal", 64, 128])):
        call(url, api, data)  # warm: models loaded, first allocations made
    start = process.memory_info().rss
    bomb = upload(url, "tiny-file-49-megapixels.png", big_png())
    wide_csv = upload(url, "wide.csv", (",".join(f"c{i}" for i in range(100_000)) + "\n").encode())
    oversized = json.dumps({"data": ["x" * 3_000_000, 5]}).encode()
    peak = start
    calls = image_rounds = 0

    def images_at_once(n: int = 16):
        threads = [threading.Thread(target=call, args=(url, "classify_image", [bomb, 5])) for _ in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    while calls < 200:
        for kind in range(5):
            if kind == 0:
                call(url, "positional_encoding", ["sinusoidal", 512, 512])
                calls += 1
            elif kind == 1:
                request(url, "gradio_api/call/fill_mask", oversized)
                calls += 1
            elif kind == 2 and image_rounds < 2:  # the slowest calls: 16 images decoded, one after another
                images_at_once()
                image_rounds += 1
                calls += 16
            elif kind == 3:
                call(url, "fine_tune", ["My CSV file", wide_csv, "text", "label", *FINE_TUNE[4:]])
                calls += 1
            else:
                call(url, "generate", ["Hi", 10**400, "sampling", 0.8, 50, 0.95, 1.0, 0])
                calls += 1
            peak = max(peak, process.memory_info().rss)
    time.sleep(15)  # idle: finished jobs have released their memory
    end = process.memory_info().rss
    return {
        "calls": calls,
        "RSS at start (MB)": round(start / 1e6),
        "RSS peak (MB)": round(peak / 1e6),
        "RSS idle after (MB)": round(end / 1e6),
        "growth (MB)": round((end - start) / 1e6),
    }


def classroom(url: str, students: int = 30) -> dict:
    sessions = [f"student-{n:02d}" for n in range(students)]
    for session in sessions:  # one after another, as fine-tune runs one at a time
        answer = call(url, "fine_tune", FINE_TUNE, "192.0.2.200", session_hash=session)
        assert "event: complete" in answer, answer[-300:]
    kept = sum(
        "event: complete" in call(url, "fine_tune_predict", ["great"], "192.0.2.200", session_hash=session)
        for session in sessions
    )
    stranger = call(url, "fine_tune_predict", ["great"], "192.0.2.201", session_hash=sessions[0])
    return {
        "students behind one address": students,
        "kept their own model": kept,
        "another address reached a student's model": "event: complete" in stranger,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: flood, memory, classroom")
    skip = set(parser.parse_args().skip.split(","))
    load = os.getloadavg()[0]  # the times are only as quiet as the machine: say how busy it was
    print(f"CPU: {cpu_name()}; float32; tiny preset; load average {load:.2f} at the start")
    with tempfile.TemporaryDirectory(prefix="hub-bench-public-") as folder:
        server, url = start_hub(Path(folder))
        try:
            for name, part in (
                ("flood", lambda: flood(url)),
                ("memory", lambda: memory(url, server)),
                ("classroom", lambda: classroom(url)),
            ):
                if name not in skip:
                    started = time.perf_counter()
                    print(name, json.dumps(part()), f"({time.perf_counter() - started:.0f} s)", flush=True)
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
