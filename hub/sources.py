"""Where each demo's model comes from (--model, the tiny preset's folder, the default) and whether it is already on
this machine, answered from local folders and the Hugging Face cache alone, before torch loads."""

import importlib
import importlib.util
from pathlib import Path

from hub.catalog import CATALOG, Entry, with_models
from hub.settings import Settings

# ---------------------------------------------------------------------------------------------------------
# Where a model comes from


def is_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).expanduser().exists()


def tiny_model_folder(cache_dir: Path, demo_id: str) -> Path:
    return cache_dir / "tiny" / demo_id


def tiny_model_is_built(folder: Path) -> bool:
    return (folder / ".complete").exists()


def builds_tiny(demo_id: str, has_tiny: bool, settings: Settings) -> bool:
    """In the tiny preset a demo with a tiny builder uses its random-weight model, unless --model names another."""
    return settings.preset == "tiny" and has_tiny and demo_id not in settings.models


def model_source(demo_id: str, default_model: str, has_tiny: bool, settings: Settings) -> str:
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


def list_models(settings: Settings) -> str:
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
