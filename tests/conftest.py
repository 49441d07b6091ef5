"""Shared fixtures: tiny models built on disk, the hub served on loopback, a client and a headless browser.
Nothing here touches the network."""

import os
import shutil
import socket
import tempfile
from pathlib import Path

# Before gradio or the Hub libraries are imported: no network, no analytics, temp files in a private folder.
_TEMP = Path(tempfile.mkdtemp(prefix="hub-tests-"))
# Everything below the system temp folder goes here too (gradio_client leaves an empty folder there per download).
(_TEMP / "tmp").mkdir()
os.environ["TMPDIR"] = str(_TEMP / "tmp")
tempfile.tempdir = None  # read TMPDIR again
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    GRADIO_ANALYTICS_ENABLED="False",
    GRADIO_TEMP_DIR=str(_TEMP / "gradio"),
    HF_HOME=str(_TEMP / "hf-home"),
    DIFFUSERS_DISABLE_REMOTE_CODE="true",
)

import pytest  # noqa: E402

from demos import DEMOS  # noqa: E402
from hub.app import build_app, launch  # noqa: E402
from hub.models import ModelStore, build_tiny_model  # noqa: E402
from hub.settings import Settings  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TEMP, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_settings() -> Settings:
    return Settings(preset="tiny", cache_dir=_TEMP / "cache", dtype="float32", port=free_port(), offline=True)


@pytest.fixture(scope="session")
def store(tiny_settings: Settings) -> ModelStore:
    return ModelStore(tiny_settings, DEMOS)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_settings: Settings):
    """tiny_model_dir("fill-mask") -> the folder holding that demo's tiny model, built on first use."""
    by_id = {demo.id: demo for demo in DEMOS}
    return lambda demo_id: build_tiny_model(by_id[demo_id], tiny_settings.cache_dir)


@pytest.fixture(scope="session")
def hub_url(tiny_settings: Settings, store: ModelStore):
    """The whole hub, every demo, served on loopback for the session."""
    app = build_app(tiny_settings, store)
    _, url, _ = launch(app, tiny_settings, prevent_thread_lock=True, quiet=True)
    yield url
    app.close()


@pytest.fixture(scope="session")
def client(hub_url: str):
    from gradio_client import Client

    return Client(hub_url, verbose=False, download_files=str(_TEMP / "downloads"))


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium installed (apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, hub_url: str):
    """A fresh browser tab; open a demo with page.goto(f"{hub_url}?tab=<demo id>")."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def decoder(store):
    """The tiny GPT-2 as the views inside the models see it (hub.inside.Transformer)."""
    from hub.inside import load_transformer

    return load_transformer(store, "decoder")


@pytest.fixture(scope="session")
def encoder(store):
    """The tiny BERT as the views inside the models see it."""
    from hub.inside import load_transformer

    return load_transformer(store, "encoder")


# --- fine-tune: the tiny backbone, a small dataset and a training slowed down enough to stop in the middle ---


@pytest.fixture(scope="module")
def tiny_backbone(tiny_model_dir):
    from demos.fine_tune import load_backbone

    return load_backbone(str(tiny_model_dir("fine-tune")))


@pytest.fixture(scope="module")
def small_data():
    from demos.fine_tune import LabelledTexts, builtin_dataset

    data = builtin_dataset()
    return LabelledTexts(
        "small", data.label_names, data.train_texts[:48], data.train_labels[:48], data.test_texts, data.test_labels
    )


@pytest.fixture
def slow_training(monkeypatch):
    """Each training step of the (in-process) server takes at least 20 ms: 2,400 steps would take over 48 s,
    so a run that ends within seconds was stopped, not finished."""
    import time

    from demos.fine_tune import training

    original = training.new_classifier

    def slow_classifier(*args, **kwargs):
        model = original(*args, **kwargs)
        model.register_forward_pre_hook(lambda *_: time.sleep(0.02) if model.training else None)
        return model

    monkeypatch.setattr(training, "new_classifier", slow_classifier)
