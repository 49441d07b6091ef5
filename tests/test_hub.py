"""The app shell: settings and CLI, the model store, failures that stay on their tab, deep links."""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from demos import DEMOS, find_demos
from hub.app import build_app, launch, tab_title
from hub.cli import parse_settings
from hub.demo import Demo
from hub.device import bfloat16_is_faster, resolve_dtype
from hub.errors import ModelUnavailableError
from hub.models import ModelStore
from hub.settings import Settings, hub_is_reachable, settings_from_env

from .conftest import free_port
from .test_cli import fake_hf_cache

ROOT = Path(__file__).resolve().parent.parent


# --- settings and CLI ---------------------------------------------------------------------------------------


def test_cli_flags_become_settings():
    command, settings = parse_settings(
        [
            "run",
            "--port",
            "8000",
            "--demos",
            "fill-mask,text-generation",
            "--model",
            "fill-mask=./my-bert",
            "--preset",
            "tiny",
            "--offline",
            "--dtype",
            "float32",
            "--diffusion-concurrency",
            "2",
        ]
    )
    assert command == "run"
    assert settings.port == 8000
    assert settings.demos == ["fill-mask", "text-generation"]
    assert settings.models == {"fill-mask": "./my-bert"}
    assert (settings.preset, settings.offline, settings.dtype) == ("tiny", True, "float32")
    assert settings.diffusion_concurrency == 2


def test_environment_variables_set_the_same_settings():
    settings = settings_from_env(
        {
            "HUB_DEMOS": "fill-mask",
            "HUB_MODELS": "fill-mask=a/b;text-generation=./gpt",
            "HUB_OFFLINE": "1",
            "GRADIO_SERVER_NAME": "0.0.0.0",
            "HUB_PORT": "9000",
            "HUB_PRESET": "tiny",
        }
    )
    assert settings.demos == ["fill-mask"]
    assert settings.models == {"fill-mask": "a/b", "text-generation": "./gpt"}
    assert settings.offline and settings.preset == "tiny"
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)


def test_a_malformed_model_flag_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--model", "gpt2"])
    assert "DEMO=ID_OR_DIR" in capsys.readouterr().err


def test_demos_come_in_the_order_asked():
    assert [d.id for d in find_demos(["fill-mask", "text-generation"])] == ["fill-mask", "text-generation"]
    assert [d.id for d in find_demos(None)] == [d.id for d in DEMOS]
    with pytest.raises(ValueError, match="unknown demo"):
        find_demos(["nope"])


def run_cli(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {"HUB_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "hub", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_prefetch_then_list_with_the_tiny_preset(tmp_path):
    prefetch = run_cli("prefetch", "--preset", "tiny", "--demos", "text-generation,fill-mask", cache_dir=tmp_path)
    assert prefetch.returncode == 0, prefetch.stderr
    for n, demo_id in enumerate(["text-generation", "fill-mask"], 1):
        assert re.search(rf"\[{n}/2\] {demo_id} \(.*/tiny/{demo_id}\): ready", prefetch.stdout), prefetch.stdout
    assert "prefetch: 2 of 2 models ready" in prefetch.stdout

    listing = run_cli("list", "--preset", "tiny", "--model", "fill-mask=/no/such/folder", cache_dir=tmp_path)
    lines = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}
    assert lines["text-generation"] == "built"
    assert lines["fill-mask"] == "MISSING"


def test_help_explains_every_option(tmp_path):
    text = run_cli("--help", cache_dir=tmp_path).stdout
    for option in ["--host", "--port", "--demos", "--model", "--preset", "--offline", "--dtype", "--share", "prefetch"]:
        assert option in text


# --- the model store ----------------------------------------------------------------------------------------


def counting_demo(load_seconds: float = 0.2, fail: bool = False) -> tuple[Demo, list]:
    loads = []

    def load(source, dtype, device):
        loads.append(source)
        time.sleep(load_seconds)
        if fail:
            raise OSError("safetensors header is corrupt\nmore detail")
        return {"model": source}

    demo = Demo(id="counting", title="Counting", default_model="org/model", load=load, build_tiny=None, tab=None)
    return demo, loads


def test_two_first_requests_load_the_model_once():
    demo, loads = counting_demo()
    store = ModelStore(Settings(dtype="float32"), [demo])
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.get("counting"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["org/model"]
    assert all(result is results[0] for result in results)


def test_a_model_that_cannot_load_gets_a_message_naming_it_and_the_fix():
    demo, _ = counting_demo(load_seconds=0, fail=True)
    store = ModelStore(Settings(dtype="float32", offline=True), [demo])
    with pytest.raises(ModelUnavailableError, match=r"'org/model'.*corrupt.*prefetch"):
        store.get("counting")


def test_a_missing_local_folder_is_named():
    demo, loads = counting_demo()
    store = ModelStore(Settings(dtype="float32", models={"counting": "/no/such/model"}), [demo])
    with pytest.raises(ModelUnavailableError, match="/no/such/model.*does not exist"):
        store.get("counting")
    assert loads == []


def test_offline_and_not_cached_says_prefetch():
    text_generation = next(d for d in DEMOS if d.id == "text-generation")
    store = ModelStore(Settings(dtype="float32", offline=True), [text_generation])
    with pytest.raises(ModelUnavailableError, match="openai-community/gpt2.*prefetch.*--preset tiny"):
        store.get("text-generation")


def test_auto_dtype_is_bfloat16_only_where_it_is_faster():
    expected = torch.bfloat16 if bfloat16_is_faster("cpu") else torch.float32
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("float32", "cpu") == torch.float32


# --- the served app -----------------------------------------------------------------------------------------


def test_a_broken_model_stays_on_its_tab(tiny_settings, tiny_model_dir):
    settings = Settings(**{**tiny_settings.__dict__, "port": free_port(), "models": {"fill-mask": "/no/such/bert"}})
    app = build_app(settings)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="/no/such/bert"):
            client.predict("Paris is the [MASK] of France.", api_name="/fill_mask")
        assert client.predict("Hello", 5, "greedy", api_name="/generate")
    finally:
        app.close()


def test_every_demo_is_an_api_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/fill_mask"} <= set(endpoints)


def test_tiny_preset_shows_a_banner_and_deep_links_open_a_tab(page, hub_url):
    page.goto(f"{hub_url}?tab=fill-mask")
    assert "random weights" in page.locator("#tiny-banner").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"button[role='tab'][aria-selected='true']\")].some(t => t.innerText.includes('Fill-mask'))"
    )
    page.get_by_role("tab", name="Text generation (tiny GPT-2)").click()
    page.get_by_role("button", name="Generate").wait_for()
    assert page.locator("#models-banner").count() == 0, "every tiny model is built here: the tiny banner says it all"


def test_an_unreachable_hub_is_noticed_at_once(monkeypatch):
    import http.server

    closed = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
    assert not hub_is_reachable(timeout_s=1)

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.handle_request, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        assert hub_is_reachable(timeout_s=5)
    finally:
        server.server_close()


# --- what the page says about the models it loads -----------------------------------------------------------

BY_ID = {demo.id: demo for demo in DEMOS}


def title_with(tmp_path: Path, demo_id: str, **settings) -> str:
    store = ModelStore(Settings(dtype="float32", cache_dir=tmp_path, **settings), DEMOS)
    return tab_title(BY_ID[demo_id], store)


def test_tab_titles_name_the_model_loaded(tmp_path):
    assert title_with(tmp_path, "text-generation") == "Text generation (GPT-2)"
    assert title_with(tmp_path, "text-generation", preset="tiny") == "Text generation (tiny GPT-2)"
    assert title_with(tmp_path, "zero-shot", preset="tiny") == "Zero-shot (tiny CLIP)"
    assert title_with(tmp_path, "text-generation", models={"text-generation": "distilgpt2"}) == (
        "Text generation (distilgpt2)"
    )
    clip = "ViT-B-16/laion2b_s34b_b88k"
    assert title_with(tmp_path, "zero-shot", models={"zero-shot": clip}) == f"Zero-shot ({clip})"
    (tmp_path / "my-bert").mkdir()
    folder = str(tmp_path / "my-bert") + "/"
    assert title_with(tmp_path, "fill-mask", models={"fill-mask": folder}) == "Fill-mask (my-bert)"
    # --model wins over the tiny preset; a tab over other tabs' models keeps its title
    assert title_with(tmp_path, "fill-mask", preset="tiny", models={"fill-mask": folder}) == "Fill-mask (my-bert)"
    assert title_with(tmp_path, "attention", preset="tiny") == "Attention"


def page_texts(app) -> dict[str, str]:
    """The page's Markdown texts by elem_id, and its tab titles under "tabs"."""
    texts = {block.elem_id: block.value for block in app.blocks.values() if isinstance(block, gr.Markdown)}
    tabs = [block for block in app.blocks.values() if isinstance(block, gr.Tab)]
    return {
        **texts,
        "tabs": [tab.label for tab in tabs if tab.id != "start-here" and not str(tab.id).startswith("chapter-")],
        "chapters": [tab.label for tab in tabs if str(tab.id).startswith("chapter-")],
    }


@pytest.fixture
def hf_cache_with_gpt2_only(tmp_path, monkeypatch):
    """A Hugging Face cache holding GPT-2, and an empty folder where BERT's download began."""
    import huggingface_hub

    fake_hf_cache(tmp_path / "hf", cached=["openai-community/gpt2"], empty=["google-bert/bert-base-uncased"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path


def test_offline_the_page_says_which_tabs_have_their_model_and_which_cannot_work(hf_cache_with_gpt2_only, caplog):
    settings = Settings(dtype="float32", offline=True, demos=["text-generation", "fill-mask", "attention"])
    with caplog.at_level("INFO", logger="hub.app"):
        texts = page_texts(build_app(settings))
    banner = texts["models-banner"]
    assert "Ready on this machine: Text generation (GPT-2)." in banner
    assert "hub being offline and their models not in the local cache: Fill-mask (BERT), Attention (in part)" in banner
    assert "python -m hub prefetch" in banner
    assert "model-notice-text-generation" not in texts
    assert texts["model-notice-fill-mask"].startswith("> **This tab cannot work now:** `google-bert/bert-base-uncased`")
    # the attention tab still shows GPT-2 and MiniLM (from its PyPI package); only BERT is missing
    assert texts["model-notice-attention"] == (
        "> **Part of this tab cannot work now:** `google-bert/bert-base-uncased` (fill-mask): not in the local cache, "
        "and the hub is offline; run `python -m hub prefetch` while online, or start with `--preset tiny`."
    )
    assert [r.getMessage() for r in caplog.records if r.name == "hub.app"] == [
        "model of text-generation: openai-community/gpt2, on this machine",
        "model of fill-mask: google-bert/bert-base-uncased, not on this machine and the hub is offline: "
        "its tabs cannot work",
        "model of minilm: sentence-transformers/all-MiniLM-L6-v2, on this machine",
    ]


def test_online_a_model_not_here_is_said_to_download_on_first_use(hf_cache_with_gpt2_only, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    settings = Settings(dtype="float32", demos=["text-generation", "fill-mask"], models={"text-generation": "/no/gpt"})
    texts = page_texts(build_app(settings))
    assert texts["models-banner"] == (
        "> **Models.** Downloaded from the Hugging Face Hub on first use (the first request waits for it): "
        "Fill-mask (BERT). Cannot work, their model folder does not exist: Text generation (gpt)."
    )
    assert texts["model-notice-fill-mask"].startswith("> **Downloads on first use:** `google-bert/bert-base-uncased`")
    assert texts["model-notice-text-generation"] == (
        "> **This tab cannot work now:** `/no/gpt`: this folder does not exist (see --model)."
    )
    assert texts["tabs"] == ["Text generation (gpt)", "Fill-mask (BERT)"]


def test_a_tab_whose_model_cannot_load_says_so_at_its_top(hf_cache_with_gpt2_only, browser):
    settings = Settings(dtype="float32", offline=True, port=free_port(), demos=["text-generation", "fill-mask"])
    app = build_app(settings)
    _, url, _ = launch(app, settings, prevent_thread_lock=True, quiet=True)
    page = browser.new_page()
    try:
        page.goto(f"{url}?tab=fill-mask")
        assert "Fill-mask (BERT)" in page.locator("#models-banner").inner_text()
        notice = page.locator("#model-notice-fill-mask")
        assert "cannot work now" in notice.inner_text()
        assert notice.bounding_box()["y"] < page.get_by_label("Text with a mask").bounding_box()["y"]
        page.get_by_role("tab", name="Text generation (GPT-2)").click()
        page.get_by_role("button", name="Generate").wait_for()
        assert page.locator("#model-notice-text-generation").count() == 0
    finally:
        page.close()
        app.close()


def test_show_errors_keeps_the_docstring_gradio_describes_an_endpoint_with():
    from gradio.utils import get_function_description

    from hub.ui import show_errors

    def answer(text: str, top_k: int = 5) -> dict:
        """Answer a text.

        Args:
            text: what to answer.
            top_k: how many answers, 1 to 10 (default 5).
        Returns:
            label -> probability.
        """
        return {}

    def stream(text: str):
        """Stream a text.

        Args:
            text: what to stream.
        """
        yield text

    assert get_function_description(show_errors(answer)) == (
        "Answer a text.",
        {"text": "what to answer.", "top_k": "how many answers, 1 to 10 (default 5)."},
        ["label -> probability."],
    )
    assert get_function_description(show_errors(stream)) == ("Stream a text.", {"text": "what to stream."}, [])
