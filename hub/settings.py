"""Settings in one place: defaults in code, environment variables for Spaces, CLI flags on top."""

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hub.catalog import BY_ID, CATALOG

DTYPES = ("auto", "float32", "bfloat16")
PRESETS = ("tiny",)
# The demo ids in tab order, from the light catalog, so the CLI checks --demos before torch loads;
# tests/test_cli.py checks they equal the ids of demos.DEMOS.
DEMO_IDS = tuple(entry.id for entry in CATALOG if entry.tab)


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
    mcp: bool = False  # also serve Gradio's MCP server: every public endpoint as a tool
    cache_dir: Path = field(default_factory=default_cache_dir)
    queue_size: int = 64  # requests waiting beyond this get "queue is full"
    max_file_mb: int = 20  # uploads larger than this are refused by Gradio itself
    diffusion_concurrency: int = 1  # text-to-image generations running at once
    # What one text-to-image request may cost, in denoising steps of one 512x512 image (pixels x steps x images,
    # twice with guidance): 8 is about 30 s on a 2-core CPU in float32, so one visitor never holds the slot for long.
    image_budget: float = 8.0


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_flag(env: dict[str, str], name: str) -> bool:
    """A HUB_* switch: 1/true/yes/on or 0/false/no/off; anything else is a mistake worth saying."""
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (or true/false), got {env[name]!r}")


def _env_number(env: dict[str, str], name: str, kind: type, default):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {env[name]!r}") from None


def split_demo_ids(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]


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
    """Settings a Space (or a shell) sets through HUB_* variables; Gradio's own server variables count too.
    A value that cannot be read raises ValueError naming the variable."""
    env = os.environ if env is None else env
    s = Settings()
    s.host = env.get("HUB_HOST") or env.get("GRADIO_SERVER_NAME") or s.host
    port_variable = "HUB_PORT" if env.get("HUB_PORT") else "GRADIO_SERVER_PORT"
    s.port = _env_number(env, port_variable, int, s.port)
    if env.get("HUB_DEMOS"):
        s.demos = split_demo_ids(env["HUB_DEMOS"])
    if env.get("HUB_MODELS"):
        try:
            s.models = parse_models([p for p in env["HUB_MODELS"].split(";") if p.strip()])
        except ValueError as error:
            raise ValueError(f"HUB_MODELS: {error}") from None
    s.preset = env.get("HUB_PRESET") or None
    s.offline = _env_flag(env, "HUB_OFFLINE") or _truthy(env.get("HF_HUB_OFFLINE", ""))
    s.dtype = env.get("HUB_DTYPE") or s.dtype
    s.share = _env_flag(env, "HUB_SHARE")
    s.mcp = _env_flag(env, "HUB_MCP")
    if env.get("HUB_CACHE_DIR"):
        s.cache_dir = Path(env["HUB_CACHE_DIR"])
    s.queue_size = _env_number(env, "HUB_QUEUE_SIZE", int, s.queue_size)
    s.diffusion_concurrency = _env_number(env, "HUB_DIFFUSION_CONCURRENCY", int, s.diffusion_concurrency)
    s.image_budget = _env_number(env, "HUB_IMAGE_BUDGET", float, s.image_budget)
    return s


def check_settings(s: Settings) -> None:
    """Refuse, in one sentence, a setting the hub cannot run with, before any heavy library loads."""
    if not 1 <= s.port <= 65535:
        raise ValueError(f"--port (HUB_PORT) must be between 1 and 65535, got {s.port}")
    if s.dtype not in DTYPES:
        raise ValueError(f"--dtype (HUB_DTYPE) must be one of {', '.join(DTYPES)}, got {s.dtype!r}")
    if s.preset is not None and s.preset not in PRESETS:
        raise ValueError(f"--preset (HUB_PRESET) must be one of {', '.join(PRESETS)}, got {s.preset!r}")
    if s.queue_size < 1:
        raise ValueError(f"--queue-size (HUB_QUEUE_SIZE) must be at least 1, got {s.queue_size}")
    if s.diffusion_concurrency < 1:
        raise ValueError(
            f"--diffusion-concurrency (HUB_DIFFUSION_CONCURRENCY) must be at least 1, got {s.diffusion_concurrency}"
        )
    if not s.image_budget > 0 or s.image_budget == float("inf"):  # also refuses nan
        raise ValueError(f"--image-budget (HUB_IMAGE_BUDGET) must be a positive number, got {s.image_budget}")
    if s.demos is not None:
        if not s.demos:
            raise ValueError("--demos (HUB_DEMOS) names no demo")
        unknown = [d for d in s.demos if d not in DEMO_IDS]
        if unknown:
            raise ValueError(f"unknown demo id(s) {', '.join(unknown)}; known: {', '.join(DEMO_IDS)}")
        repeated = sorted({d for d in s.demos if s.demos.count(d) > 1})
        if repeated:
            raise ValueError(f"--demos (HUB_DEMOS) names {', '.join(repeated)} more than once")
    # A --model may name an enabled demo, or a tab's model that an enabled tab reads (--demos attention reads the
    # fill-mask and text-generation models).
    enabled = set(DEMO_IDS if s.demos is None else s.demos)
    read = {used for demo_id in enabled for used in BY_ID[demo_id].uses if BY_ID[used].tab}
    unknown_models = sorted(set(s.models) - enabled - read)
    if unknown_models:
        raise ValueError(
            f"--model names demo(s) that are not enabled and that no enabled tab reads: {', '.join(unknown_models)}"
        )


def apply_offline(offline: bool) -> None:
    """Tell the Hub libraries to stay offline; must run before they are imported."""
    os.environ.setdefault("DIFFUSERS_DISABLE_REMOTE_CODE", "true")
    if offline:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[var] = "1"


def hub_is_reachable(timeout_s: float = 2.0) -> bool:
    """One quick look at the Hugging Face Hub: without it, each model load would retry for minutes."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s)
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False
    return True
