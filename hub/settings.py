"""Settings in one place: defaults in code, environment variables for Spaces, CLI flags on top."""

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DTYPES = ("auto", "float32", "bfloat16")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "transformers-demo-hub"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    demos: list[str] | None = None  # None = every demo, in registry order
    models: dict[str, str] = field(default_factory=dict)  # demo id -> Hub id or local folder
    preset: str | None = None  # "tiny" = small random-weight models built locally
    offline: bool = False
    dtype: str = "auto"
    share: bool = False
    cache_dir: Path = field(default_factory=default_cache_dir)
    queue_size: int = 64  # requests waiting beyond this get "queue is full"
    max_file_mb: int = 20  # uploads larger than this are refused by Gradio itself
    diffusion_concurrency: int = 1  # text-to-image generations running at once
    # What one text-to-image request may cost, in denoising steps of one 512x512 image (pixels x steps x images,
    # twice with guidance): 8 is about 30 s on a 2-core CPU in float32, so one visitor never holds the slot for long.
    image_budget: float = 8.0


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_models(pairs: list[str]) -> dict[str, str]:
    """Turn ["fill-mask=./my-bert", ...] into {"fill-mask": "./my-bert"}."""
    models = {}
    for pair in pairs:
        demo_id, sep, source = pair.partition("=")
        if not sep or not demo_id.strip() or not source.strip():
            raise ValueError(f"--model expects DEMO=ID_OR_DIR, got {pair!r}")
        models[demo_id.strip()] = source.strip()
    return models


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings a Space (or a shell) sets through HUB_* variables; Gradio's own server variables count too."""
    env = os.environ if env is None else env
    s = Settings()
    s.host = env.get("HUB_HOST") or env.get("GRADIO_SERVER_NAME") or s.host
    s.port = int(env.get("HUB_PORT") or env.get("GRADIO_SERVER_PORT") or s.port)
    if env.get("HUB_DEMOS"):
        s.demos = [d.strip() for d in env["HUB_DEMOS"].split(",") if d.strip()]
    if env.get("HUB_MODELS"):
        s.models = parse_models([p for p in env["HUB_MODELS"].split(";") if p.strip()])
    s.preset = env.get("HUB_PRESET") or None
    s.offline = _truthy(env.get("HUB_OFFLINE", "")) or _truthy(env.get("HF_HUB_OFFLINE", ""))
    s.dtype = env.get("HUB_DTYPE") or s.dtype
    s.share = _truthy(env.get("HUB_SHARE", ""))
    if env.get("HUB_CACHE_DIR"):
        s.cache_dir = Path(env["HUB_CACHE_DIR"])
    s.queue_size = int(env.get("HUB_QUEUE_SIZE") or s.queue_size)
    s.diffusion_concurrency = int(env.get("HUB_DIFFUSION_CONCURRENCY") or s.diffusion_concurrency)
    s.image_budget = float(env.get("HUB_IMAGE_BUDGET") or s.image_budget)
    return s


def apply_offline(offline: bool) -> None:
    """Tell the Hub libraries to stay offline; must run before they are imported."""
    os.environ.setdefault("DIFFUSERS_DISABLE_REMOTE_CODE", "true")
    if offline:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[var] = "1"


def hub_is_reachable(timeout_s: float = 3.0) -> bool:
    """One quick look at the Hugging Face Hub: without it, each model load would retry for minutes."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s)
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False
    return True
