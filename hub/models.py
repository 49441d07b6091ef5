"""ModelStore: loads each demo's model once, lazily and thread-safely, and explains failures."""

import copy
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.demo import Demo
from hub.device import pick_device, resolve_dtype
from hub.errors import ModelUnavailableError
from hub.settings import Settings
from hub.sources import builds_tiny, model_source, model_status
from hub.sources import is_local as is_local  # the demos import it from here
from hub.sources import tiny_model_folder as tiny_model_folder
from hub.sources import tiny_model_is_built as tiny_model_is_built

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def build_tiny_model(demo: Demo, cache_dir: Path) -> Path:
    """Build the demo's tiny random-weight model once into the cache; later calls reuse the folder."""
    folder = tiny_model_folder(cache_dir, demo.id)
    if tiny_model_is_built(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final folder and rename, so a half-built model is never loaded.
    scratch = Path(tempfile.mkdtemp(prefix=f".{demo.id}-", dir=folder.parent))
    try:
        demo.build_tiny(scratch)
        (scratch / ".complete").touch()
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    reason = text[0] if text else type(error).__name__
    return reason if len(reason) <= 300 else reason[:297] + "..."


class ModelStore:
    """One loaded model per demo, shared by every visitor."""

    def __init__(self, settings: Settings, demos: list[Demo]):
        self.settings = settings
        self.demos = {demo.id: demo for demo in demos}
        for demo in demos:  # a tab that reads another demo's model can be enabled alone (--demos attention)
            for used in demo.uses:
                self.demos.setdefault(used.id, used)
        self.device = pick_device()
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self._models: dict[str, Any] = {}
        self._locks = {demo_id: threading.Lock() for demo_id in self.demos}

    def source(self, demo_id: str) -> str:
        """Where the demo's model comes from: --model, else the tiny preset's folder, else the default."""
        demo = self.demos[demo_id]
        return model_source(demo_id, demo.default_model, demo.build_tiny is not None, self.settings)

    def builds_tiny(self, demo_id: str) -> bool:
        """True when the demo uses the tiny preset's random-weight model, built on this machine."""
        return builds_tiny(demo_id, self.demos[demo_id].build_tiny is not None, self.settings)

    def status(self, demo_id: str, cached: set[str]) -> str:
        """Whether the demo's model is on this machine (hub.sources.model_status); `cached` = cached_hub_repos()."""
        source = self.source(demo_id)
        if self.builds_tiny(demo_id):
            return model_status(source, [], cached, tiny_folder=Path(source))
        return model_status(source, self.demos[demo_id].hub_repos(source), cached)

    def get(self, demo_id: str, on_load: Callable[[str], None] | None = None) -> Any:
        """The demo's model, loading it on first use; `on_load(message)` is told when a load starts."""
        if demo_id in self._models:
            return self._models[demo_id]
        with self._locks[demo_id]:  # a second first request waits here instead of loading again
            if demo_id not in self._models:
                source = self.source(demo_id)
                if on_load:
                    on_load(f"Loading {source} (first use, this can take a while)...")
                self._models[demo_id] = self._load(self.demos[demo_id], source)
        return self._models[demo_id]

    def _load(self, demo: Demo, source: str) -> Any:
        try:
            if self.builds_tiny(demo.id):
                build_tiny_model(demo, self.settings.cache_dir)
            elif is_local(source) and not Path(source).expanduser().exists():
                raise FileNotFoundError(f"folder {source} does not exist")
            log.info("loading %s model from %s (%s, %s)", demo.id, source, self.dtype, self.device)
            return demo.load(source, self.dtype, self.device)
        except Exception as error:
            if is_local(source):
                fix = "Check that the folder holds a complete model saved by its library."
            elif self.settings.offline:
                fix = "It is not in the local cache: run `python -m hub prefetch` while online, or use `--preset tiny`."
            else:
                fix = "Check the model id and the network; for offline use run `python -m hub prefetch` while online, or use `--preset tiny`."
            # No traceback: each click on the tab tries again, and the refusal's one log line says it all.
            raise ModelUnavailableError(
                f"The {demo.title} model '{source}' could not be loaded ({_reason(error)}). {fix}"
            ) from error


def weight_sharing_copy(module: "torch.nn.Module") -> "torch.nn.Module":
    """A second module tree over the *same* parameter and buffer tensors (the deepcopy memo maps each to itself):
    the views inside the models change how it computes (eager attention, hooks) without touching the loaded model,
    which keeps its fast path, and without a second copy of the weights."""
    shared = {id(tensor): tensor for tensor in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)
