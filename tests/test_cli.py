"""The command line as an operator meets it: every mistake is one line on stderr and a non-zero exit, said before
torch, transformers or gradio load; `list` reads a light catalog; --mcp serves the public endpoints as MCP tools,
each described; prefetch offline says so."""

import importlib
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
from hub.catalog import CATALOG
from hub.models import ModelStore
from hub.settings import DEMO_IDS, Settings
from hub.sources import needed_repos

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


def test_the_light_catalog_says_what_the_demos_say():
    # every demo with a model, the ones other tabs borrow included (MiniLM)
    demos = ModelStore(Settings(dtype="float32"), DEMOS).demos
    assert [entry.id for entry in CATALOG] == [*DEMO_IDS, "minilm"] and set(demos) == {e.id for e in CATALOG}
    for entry in CATALOG:
        demo = demos[entry.id]
        assert (entry.title, entry.default_model) == (demo.title, demo.default_model)
        assert (entry.tiny, entry.tab, bool(entry.default_model)) == (
            demo.build_tiny is not None,
            demo.tab is not None,
            demo.load is not None,
        )
        assert entry.uses == tuple(used.id for used in demo.uses)
        if entry.tab:
            assert importlib.import_module(entry.module).DEMO is demo
        if demo.load is not None:
            assert needed_repos(entry, demo.default_model) == demo.hub_repos(demo.default_model), entry.id
            if entry.source_is_repo:  # another Hub id is the one repo it needs, as the demo says
                assert needed_repos(entry, "someone/other-model") == demo.hub_repos("someone/other-model")


# Run in a fresh interpreter: the command, then the names of the heavy libraries it imported.
HEAVY_IMPORTS = """
import sys
from hub.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "transformers", "timm", "open_clip", "diffusers", "gradio", "demos")
print("imported:", sorted(name for name in heavy if name in sys.modules), file=sys.stderr)
"""


def fake_hf_cache(hf_home: Path, cached: list[str], empty: list[str] = ()) -> None:
    """A Hugging Face cache folder as the Hub libraries leave it: a ref to a snapshot holding files, for each
    cached repo; a folder with nothing in it (an interrupted first download) for each empty one."""
    for repo in cached:
        folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0123abcd")
        (folder / "snapshots" / "0123abcd").mkdir(parents=True)
        (folder / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    for repo in empty:
        (hf_home / "hub" / f"models--{repo.replace('/', '--')}").mkdir(parents=True)


def test_list_reads_the_local_cache_without_loading_a_model_library(tmp_path):
    fake_hf_cache(tmp_path, cached=["openai-community/gpt2"], empty=["google-bert/bert-base-uncased"])
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_IMPORTS, "list", "--demos", "text-generation,fill-mask,attention"],
        cwd=ROOT,
        env={name: value for name, value in env.items() if not name.startswith("HUB_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        "demo                  available  model",
        "text-generation       yes        openai-community/gpt2",
        "fill-mask             no         google-bert/bert-base-uncased",
        "minilm                yes        sentence-transformers/all-MiniLM-L6-v2",  # from its PyPI package
    ]
    assert result.stderr.strip() == "imported: []"


def test_a_wrong_demo_id_is_said_before_a_model_library_loads():
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_IMPORTS, "--demos", "fill-masks"], cwd=ROOT, capture_output=True, text=True
    )
    assert "unknown demo id(s) fill-masks" in result.stderr
    assert result.stderr.strip().endswith("imported: []")


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
        (["--model", "layers=./x", "--demos", "fill-mask"], {}, ["not enabled and that no enabled tab reads: layers"]),
        (["--prot", "7872"], {}, ["unknown option --prot", "did you mean --port?"]),
        (["--cache-dir", "/proc/no-such-folder"], {}, ["--cache-dir", "/proc/no-such-folder", "cannot be written"]),
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


def test_a_model_for_a_tab_that_an_enabled_tab_reads_is_accepted(tmp_path):
    result = hub_command("list", "--demos", "attention", "--model", f"fill-mask={tmp_path}", timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"fill-mask             yes        {tmp_path}" in result.stdout


def test_start_up_names_the_hubs_own_flag_for_a_public_link(tmp_path):
    port = free_port()
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "--demos", "positional-encoding", "--preset", "tiny", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "HUB_CACHE_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in hub.stdout:
            lines.append(line.strip())
            if "--share" in line:
                break
    finally:
        hub.terminate()
        hub.wait(30)
    said = "\n".join(lines)
    assert f"Running on http://127.0.0.1:{port}" in said
    assert "start with --share" in said
    assert "share=True" not in said


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


@pytest.fixture(scope="module")
def mcp_tools(tmp_path_factory) -> tuple[list[dict], set[str]]:
    """The MCP tool schemas of the whole hub served with --mcp (tiny preset), and its public endpoint names."""
    port = free_port()
    args = ["run", "--preset", "tiny", "--offline", "--mcp", "--port", str(port)]
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", *args],
        cwd=ROOT,
        env={**os.environ, "HUB_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))},
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
    return tools, public


def test_mcp_serves_every_public_endpoint_as_a_tool(mcp_tools):
    tools, public = mcp_tools
    assert {"fill_mask", "generate", "attention", "text_to_image"} <= public
    assert {tool["meta"]["endpoint_name"] for tool in tools} == public
    fill_mask = next(tool for tool in tools if tool["meta"]["endpoint_name"] == "fill_mask")
    assert set(fill_mask["inputSchema"]["properties"]) == {"text", "top_k"}


def test_every_mcp_tool_describes_itself_and_each_input(mcp_tools):
    # Gradio builds them from the handler's docstring: a first paragraph, then "Args:" with "name: meaning" lines
    tools, _ = mcp_tools
    undescribed = {}
    for tool in tools:
        missing = [name for name, schema in tool["inputSchema"]["properties"].items() if not schema.get("description")]
        if not tool["description"].split(" Returns:")[0].strip(" ."):  # "" + ". Returns: ..." when only Returns
            missing.insert(0, "(the tool itself)")
        if missing:
            undescribed[tool["meta"]["endpoint_name"]] = missing
    assert undescribed == {}, f"endpoints without a description: {undescribed}"


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
