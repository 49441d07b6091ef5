"""What the fine-tune tab shows of a training run: its status line, the loss by step and the held-out accuracy by
epoch, and the tables of probe texts, per-class results and confusions (plain values: the tab only places them)."""

import pandas as pd

from demos.fine_tune.training import LIMITS, Evaluation, TrainingRun


def loss_frame(run: TrainingRun) -> pd.DataFrame:
    return pd.DataFrame({"step": range(1, len(run.losses) + 1), "loss": run.losses})


# The accuracy plot's x axis: whole epochs, as categories in this order (a number axis would tick at 0.5, 1.5...).
EPOCH_TICKS = ["before", *(str(epoch) for epoch in range(1, LIMITS["epochs"][2] + 1))]


def accuracy_frame(run: TrainingRun) -> pd.DataFrame:
    return pd.DataFrame({"epoch": EPOCH_TICKS[: len(run.epoch_accuracy)], "held-out accuracy": run.epoch_accuracy})


def _top(labels: dict[str, float]) -> str:
    name, p = max(labels.items(), key=lambda item: item[1])
    return f"{name} ({p:.0%})"


def probes_frame(run: TrainingRun) -> pd.DataFrame:
    after = [_top(labels) for labels in run.probes_after] or [""] * len(run.probes)
    return pd.DataFrame(
        {"text": run.probes, "before training": [_top(labels) for labels in run.probes_before], "after training": after}
    )


def stopped_text(step: int | None, total_steps: int | None, earlier_model: bool) -> str:
    """What a stopped run leaves: its model is never kept (see training.train); an earlier run's model stays."""
    where = f"at step {step} of {total_steps}" if total_steps else "before training began"
    kept = (
        "your model from an earlier run is still the one used below"
        if earlier_model
        else "there is no fine-tuned model to try below"
    )
    return f"**Stopped {where}.** This run's model was not kept; {kept}."


def status_text(run: TrainingRun, earlier_model: bool = False) -> str:
    before = f"Held-out accuracy before training: **{run.before.accuracy:.1%}**" if run.before else ""
    if run.stopped == "cancelled":
        return stopped_text(run.step, run.total_steps, earlier_model)
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


PER_CLASS_HEADERS = ["class", "precision: before → after", "recall: before → after", "held-out texts"]


def per_class_frame(run: TrainingRun) -> pd.DataFrame:
    """Precision and recall per class in percent, before and after side by side in one cell: four narrow columns
    fit beside the plots (the API's metrics keep the fractions)."""

    def change(metric: str, name: str) -> str:
        return f"{run.before.per_class[name][metric]:.0%} → {run.after.per_class[name][metric]:.0%}"

    rows = [
        [name, change("precision", name), change("recall", name), run.after.per_class[name]["support"]]
        for name in run.data.label_names
    ]
    return pd.DataFrame(rows, columns=PER_CLASS_HEADERS)


def confusion_frame(evaluation: Evaluation, label_names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(evaluation.confusion, columns=[f"predicted {name}" for name in label_names])
    frame.insert(0, "true class", label_names)
    return frame
