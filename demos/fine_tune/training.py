"""Fine-tune's training: the plain PyTorch loop of the Hugging Face course (tokenize, pad each batch, AdamW, a
linear learning-rate schedule with warm-up), short enough to read, faster than `Trainer` for a run this small, and
stopped between two steps. Also its settings, the held-out evaluation, the metrics the API returns and the code
that reproduces a run with the library alone.

    for run in train_stream(backbone, data, TrainingSettings(epochs=1)):  # step by step
        print(run.step, run.losses[-1:])
    for run in train_live(backbone, data, settings, probes, stop):  # as a job, a few updates a second

Each step runs on the model thread (hub.model_thread), so other visitors' requests run between two steps.
        show(run)
"""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from demos.fine_tune.data import DEFAULT_PROBES, LabelledTexts
from demos.fine_tune.model import Backbone, as_labels, class_probabilities, new_classifier
from hub import model_thread
from hub.checks import check_int, check_number
from hub.errors import HubError
from hub.jobs import Job, running_jobs

TIME_LIMIT_S = 300  # a run stops after this many seconds whoever started it (an uploaded CSV can be large)
UPDATE_EVERY_S = 0.5  # a live run is shown at most this often: each update costs the training thread CPU time

# Trainings running now (a worker thread each); tests read it to check that Cancel, or a visitor leaving, stops them.
running_trainings = running_jobs


# ---------------------------------------------------------------------------------------------------------
# The settings


@dataclass(frozen=True)
class TrainingSettings:
    """The one source of each default: the tab's inputs, the API's and check_settings' defaults read it."""

    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_length: int = 64  # tokens per text; longer texts are cut
    warmup: float = 0.1  # fraction of the steps over which the learning rate rises from 0
    weight_decay: float = 0.01
    freeze_backbone: bool = False  # train only the new head
    seed: int = 0


DEFAULTS = TrainingSettings()
# Each setting's name and range: the tab's sliders show them, and check_settings holds API callers to them.
LIMITS = {
    "epochs": ("Epochs", 1, 10),
    "learning_rate": ("Learning rate", 1e-6, 1e-2),
    "batch_size": ("Batch size", 1, 64),
    "max_length": ("Max sequence length", 8, 256),
    "warmup": ("Warm-up", 0.0, 0.5),
    "weight_decay": ("Weight decay", 0.0, 0.5),
    "seed": ("Seed", 0, 2**31 - 1),
}


def check_settings(
    epochs: float = DEFAULTS.epochs,
    learning_rate: float = DEFAULTS.learning_rate,
    batch_size: float = DEFAULTS.batch_size,
    max_length: float = DEFAULTS.max_length,
    warmup: float = DEFAULTS.warmup,
    weight_decay: float = DEFAULTS.weight_decay,
    freeze_backbone: bool = DEFAULTS.freeze_backbone,
    seed: float = DEFAULTS.seed,
) -> TrainingSettings:
    if not isinstance(freeze_backbone, bool):
        raise HubError(f"Freeze the backbone must be true or false, got {freeze_backbone!r}.")
    return TrainingSettings(
        epochs=check_int(epochs, *LIMITS["epochs"]),
        learning_rate=check_number(learning_rate, *LIMITS["learning_rate"]),
        batch_size=check_int(batch_size, *LIMITS["batch_size"]),
        max_length=check_int(max_length, *LIMITS["max_length"]),
        warmup=check_number(warmup, *LIMITS["warmup"]),
        weight_decay=check_number(weight_decay, *LIMITS["weight_decay"]),
        freeze_backbone=freeze_backbone,
        seed=check_int(seed, *LIMITS["seed"]),
    )


def fit_to_backbone(settings: TrainingSettings, backbone: Backbone) -> tuple[TrainingSettings, str]:
    """The settings with the max sequence length cut to what the backbone reads (its position embeddings), and
    a note for the person when it was cut."""
    if settings.max_length <= backbone.max_tokens:
        return settings, ""
    note = (
        f"Max sequence length {settings.max_length} is more than this backbone reads ({backbone.max_tokens} "
        f"tokens): using {backbone.max_tokens}."
    )
    return replace(settings, max_length=backbone.max_tokens), note


# ---------------------------------------------------------------------------------------------------------
# The held-out evaluation


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


# ---------------------------------------------------------------------------------------------------------
# The training loop


@dataclass
class TrainingRun:
    """One run's progress, updated in place after each step."""

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

    def snapshot(self) -> "TrainingRun":
        """A copy that the training thread no longer changes, for another thread to show."""
        return replace(self, losses=list(self.losses), epoch_accuracy=list(self.epoch_accuracy))


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


def train(
    job: Job, backbone: Backbone, data: LabelledTexts, settings: TrainingSettings, probes: list[str]
) -> Iterator[TrainingRun]:
    """Fine-tune a new classifier on `data`, yielding the run after the first evaluation, each step and each epoch.
    The job's stop switch ends the run at the next step without a model; past the job's deadline the run ends
    after its current step, evaluated, with the model so far."""
    start = time.perf_counter()
    tokenizer = backbone.tokenizer
    settings, _ = fit_to_backbone(settings, backbone)  # more positions than the model has would crash it
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
    evaluation = run.before = evaluate(model, tokenizer, data, settings.max_length)
    run.epoch_accuracy.append(evaluation.accuracy)
    run.probes_before = as_labels(class_probabilities(model, tokenizer, probes, settings.max_length), data.label_names)
    run.seconds = time.perf_counter() - start
    yield run

    model.train()
    for run.epoch in range(1, settings.epochs + 1):
        tick = time.perf_counter()  # train_seconds counts batching and steps, not evaluations or the consumer
        for batch in batches:
            if job.stop.is_set():
                run.stopped = "cancelled"
                yield run
                return
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
            if job.out_of_time():
                run.stopped = f"stopped at the time limit of {job.time_limit_s:g} s"
                break
            tick = time.perf_counter()
        evaluation = evaluate(model, tokenizer, data, settings.max_length)
        run.epoch_accuracy.append(evaluation.accuracy)
        if run.stopped:
            break
    run.after = evaluation
    run.probes_after = as_labels(class_probabilities(model, tokenizer, probes, settings.max_length), data.label_names)
    run.model = model.eval()
    run.seconds = time.perf_counter() - start
    yield run


def train_stream(
    backbone: Backbone,
    data: LabelledTexts,
    settings: TrainingSettings = DEFAULTS,
    probes: list[str] | None = None,
    stop: threading.Event | None = None,
    time_limit_s: float = TIME_LIMIT_S,
) -> Iterator[TrainingRun]:
    """The training step by step, each step on the model thread: yields the run after the first evaluation, each
    step and each epoch. Setting `stop` ends the run at the next step without a model (closing the iterator does the same);
    past `time_limit_s` the run ends with the model so far."""
    probes = list(DEFAULT_PROBES) if probes is None else probes
    return model_thread.steps(train(Job(time_limit_s, stop), backbone, data, settings, probes))


def train_live(
    backbone: Backbone,
    data: LabelledTexts,
    settings: TrainingSettings,
    probes: list[str],
    stop: threading.Event | None = None,
    update_every_s: float = UPDATE_EVERY_S,
) -> Iterator[TrainingRun]:
    """The training as a hub.jobs.Job, whose thread hands the model thread one step at a time: yields a copy of the run at most every `update_every_s`,
    and the last one. Setting `stop`, or closing the iterator (Cancel, a client's cancel, a visitor who leaves),
    ends the run at the next step without a model; the Job's deadline is the run's time limit."""

    def work(job: Job) -> None:
        for run in model_thread.steps(train(job, backbone, data, settings, probes)):
            job.post(run.snapshot())

    return Job(TIME_LIMIT_S, stop).run(work, name="fine-tune", update_every_s=update_every_s)


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


def reproduce_code(
    source: str, settings: TrainingSettings, label_names: list[str], mixed_precision: bool = False, device: str = "cpu"
) -> str:
    """The run as a plain transformers + torch script: the same model, frozen weights, batches, optimizer, schedule
    and precision as `train`, so from the same seed it trains the same model."""
    s = settings
    freeze = "\nmodel.base_model.requires_grad_(False)  # train only the new head" if s.freeze_backbone else ""
    step = "loss = model(**batch.to(device)).loss"
    if mixed_precision:  # what --dtype bfloat16 (or auto, where it is faster) does: weights stay float32
        step = f"with torch.autocast(device, dtype=torch.bfloat16):\n            {step}"
    return f"""import torch
from torch.utils.data import DataLoader
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          get_linear_schedule_with_warmup, set_seed)

texts, labels = [...], [...]  # your training texts and their class numbers
label_names = {label_names!r}
device = {device!r}
tokenizer = AutoTokenizer.from_pretrained({source!r})
set_seed({s.seed})
model = AutoModelForSequenceClassification.from_pretrained(
    {source!r}, num_labels={len(label_names)}, dtype=torch.float32,
    id2label=dict(enumerate(label_names)), label2id={{n: i for i, n in enumerate(label_names)}})
model.get_input_embeddings().requires_grad_(False)  # the word embeddings stay as pretrained: faster steps{freeze}
model.to(device)
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
        {step}
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
model.eval()
model.save_pretrained("my-model")
tokenizer.save_pretrained("my-model")
# later: pipeline("text-classification", model="my-model")("What a great film!")
"""
