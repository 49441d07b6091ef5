"""The command line as an operator meets it: every mistake is one line on stderr and a non-zero exit, said before
torch, transformers or gradio load; --mcp serves the public endpoints as MCP tools; prefetch offline says so."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from demos import DEMOS
from hub.settings import DEMO_IDS

ROOT = Path(__file__).resolve().parent.parent


def hub_command(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m hub ARGS` with no HUB_* variable from the test's own environment, plus `env`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("HUB_", "GRADIO_SERVER"))}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_the_light_demo_id_list_is_the_registry():
    assert DEMO_IDS == tuple(demo.id for demo in DEMOS)


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["--demos", "nope"], {}, ["unknown demo id(s) nope", "fill-mask"]),
        (["--demos", "fill-mask,attention,fill-mask"], {}, ["fill-mask more than once"]),
        (["--demos", " , "], {}, ["names no demo"]),
        (["--port", "70000"], {}, ["between 1 and 65535", "70000"]),
        (["--port", "0"], {}, ["between 1 and 65535"]),
        (["--port", "abc"], {}, ["--port", "'abc'"]),
        (["--dtype", "float16"], {}, ["--dtype", "float16"]),
        (["--model", "fill-mask"], {}, ["DEMO=ID_OR_DIR"]),
        (["--model", "layers=./x", "--demos", "fill-mask"], {}, ["not enabled: layers"]),
        (["--queue-size", "0"], {}, ["--queue-size", "at least 1"]),
        (["--host", "no-such-host.invalid"], {}, ["no-such-host.invalid", "--host"]),
        ([], {"HUB_PORT": "abc"}, ["HUB_PORT", "whole number", "'abc'"]),
        ([], {"HUB_PORT": "99999"}, ["HUB_PORT", "99999"]),
        ([], {"GRADIO_SERVER_PORT": "x"}, ["GRADIO_SERVER_PORT"]),
        ([], {"HUB_DTYPE": "fp16"}, ["HUB_DTYPE", "'fp16'", "bfloat16"]),
        ([], {"HUB_PRESET": "small"}, ["HUB_PRESET", "'small'", "tiny"]),
        ([], {"HUB_OFFLINE": "maybe"}, ["HUB_OFFLINE", "'maybe'"]),
        ([], {"HUB_MCP": "2"}, ["HUB_MCP"]),
        ([], {"HUB_DEMOS": "fill-mask,fill-mask"}, ["HUB_DEMOS", "more than once"]),
        ([], {"HUB_MODELS": "fill-mask"}, ["HUB_MODELS", "DEMO=ID_OR_DIR"]),
        ([], {"HUB_QUEUE_SIZE": "1.5"}, ["HUB_QUEUE_SIZE", "whole number"]),
        ([], {"HUB_IMAGE_BUDGET": "nan"}, ["HUB_IMAGE_BUDGET", "positive"]),
        ([], {"HUB_DIFFUSION_CONCURRENCY": "-1"}, ["HUB_DIFFUSION_CONCURRENCY", "at least 1"]),
        (["list", "--demos", "nope"], {}, ["unknown demo id(s) nope"]),
        (["prefetch", "--dtype", "int8"], {}, ["--dtype"]),
    ],
)
def test_a_wrong_setting_is_one_line_and_a_non_zero_exit(args, env, words):
    # 30 s is far above the second it takes: only loading torch and gradio first would come near it
    assert_one_line_error(hub_command(*args, env=env, timeout=30), *words)


def test_a_port_in_use_is_said_before_anything_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(hub_command("--port", str(port), timeout=30), f"127.0.0.1:{port}", "in use", "--port")


def test_a_wrong_demo_id_answers_at_once():
    started = time.monotonic()
    result = hub_command("--demos", "text-generation,fill-masks", timeout=30)
    elapsed = time.monotonic() - started
    assert_one_line_error(result, "fill-masks")
    print(f"wrong --demos answered in {elapsed:.2f} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_mcp_serves_every_public_endpoint_as_a_tool(tmp_path):
    port = free_port()
    args = ["run", "--preset", "tiny", "--demos", "fill-mask", "--offline", "--mcp", "--port", str(port)]
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env={**os.environ, "HUB_CACHE_DIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/gradio_api"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert hub.poll() is None, "the hub exited"
            try:
                tools = get_json(f"{base}/mcp/schema")
                break
            except OSError:
                assert time.monotonic() < deadline, "the MCP schema never answered"
                time.sleep(1)
        public = {name.lstrip("/") for name in get_json(f"{base}/info")["named_endpoints"]}
    finally:
        hub.terminate()
        hub.wait(30)
    assert "fill_mask" in public
    assert {tool["meta"]["endpoint_name"] for tool in tools} == public
    fill_mask = next(tool for tool in tools if tool["meta"]["endpoint_name"] == "fill_mask")
    assert set(fill_mask["inputSchema"]["properties"]) == {"text", "top_k"}


def test_prefetch_with_no_network_says_so_and_sums_up_each_model(tmp_path):
    # HF_HUB_OFFLINE=0: the hub itself must find out that nothing answers at HF_ENDPOINT
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    result = hub_command("prefetch", "--demos", "fill-mask,text-generation", env=env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "The Hugging Face Hub cannot be reached: nothing can be downloaded."
    assert lines[1:] == [
        "[1/2] fill-mask (google-bert/bert-base-uncased): not in the local cache, and it cannot be downloaded offline",
        "[2/2] text-generation (openai-community/gpt2): not in the local cache, and it cannot be downloaded offline",
        "prefetch: 0 of 2 models ready; not ready: fill-mask, text-generation",
    ]
