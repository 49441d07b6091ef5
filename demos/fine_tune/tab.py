"""Fine-tune's tab: pick a dataset and the hyperparameters, watch the loss and the held-out accuracy live, compare
the probe texts before and after, then classify with the fine-tuned model or download it."""

from contextlib import closing
from dataclasses import replace

import gradio as gr
import pandas as pd

from demos.fine_tune.attention import attention_change_section
from demos.fine_tune.data import (
    BUILTIN,
    DEFAULT_PROBES,
    LABEL_COLUMN,
    TEXT_COLUMN,
    UPLOAD,
    check_probes,
    choose_dataset,
    guess_columns,
)
from demos.fine_tune.model import (
    DEFAULT_MODEL,
    FineTuned,
    SessionModels,
    backbone_hub_repos,
    build_tiny_backbone,
    load_backbone,
    predict,
    save_for_download,
)
from demos.fine_tune.training import (
    DEFAULTS,
    LIMITS,
    Evaluation,
    TrainingRun,
    check_settings,
    fit_to_backbone,
    reproduce_code,
    run_metrics,
    train_live,
)
from hub.demo import Demo
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors
from hub.visitors import StopSwitches, caller_id, session_id

DEMO_ID = "fine-tune"

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


# ---------------------------------------------------------------------------------------------------------
# The tab


def setting_slider(name: str, step: float) -> gr.Slider:
    label, low, high = LIMITS[name]
    return gr.Slider(low, high, value=getattr(DEFAULTS, name), step=step, label=label, info=HELP[name])


def fine_tune_tab(store: ModelStore) -> None:
    sessions = SessionModels()
    switches = StopSwitches()  # Cancel reaches the visitor's training thread through these

    gr.Markdown(
        "**Why fine-tune?** A pretrained transformer already understands language; a few minutes of training on a few "
        "hundred labelled examples turn it into a classifier for *your* labels. **The steps:** put a new, untrained "
        "classification head on the backbone, show it labelled texts in small batches, and nudge every weight to "
        "reduce the loss; texts held out from training tell you whether it learnt or just memorised."
    )
    with gr.Row():
        with gr.Column():
            dataset = gr.Radio([BUILTIN, UPLOAD], value=BUILTIN, label="Dataset", elem_id="fine-tune-dataset")
            csv_file = gr.File(
                label="CSV with a text column and a label column",
                file_types=[".csv"],
                type="filepath",
                elem_id="fine-tune-csv",
            )
            with gr.Row():
                text_column = gr.Dropdown(
                    [TEXT_COLUMN], value=TEXT_COLUMN, label="Text column", allow_custom_value=True
                )
                label_column = gr.Dropdown(
                    [LABEL_COLUMN], value=LABEL_COLUMN, label="Label column", allow_custom_value=True
                )
            with gr.Accordion("Hyperparameters", open=True):
                epochs = setting_slider("epochs", step=1)
                learning_rate = gr.Number(
                    value=DEFAULTS.learning_rate, label=LIMITS["learning_rate"][0], info=HELP["learning_rate"]
                )
                batch_size = setting_slider("batch_size", step=1)
                max_length = setting_slider("max_length", step=8)
                warmup = setting_slider("warmup", step=0.05)
                weight_decay = setting_slider("weight_decay", step=0.01)
                freeze = gr.Checkbox(value=DEFAULTS.freeze_backbone, label="Freeze the backbone", info=HELP["freeze"])
                seed = gr.Number(value=DEFAULTS.seed, precision=0, label=LIMITS["seed"][0], info=HELP["seed"])
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
    def fine_tune(dataset=BUILTIN, csv_file=None, text_column=TEXT_COLUMN, label_column=LABEL_COLUMN,
                  epochs=DEFAULTS.epochs, learning_rate=DEFAULTS.learning_rate, batch_size=DEFAULTS.batch_size,
                  max_length=DEFAULTS.max_length, warmup=DEFAULTS.warmup, weight_decay=DEFAULTS.weight_decay,
                  freeze_backbone=DEFAULTS.freeze_backbone, seed=DEFAULTS.seed, probe_texts="\n".join(DEFAULT_PROBES),
                  request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        settings = check_settings(
            epochs, learning_rate, batch_size, max_length, warmup, weight_decay, freeze_backbone, seed
        )
        probes = check_probes(probe_texts)
        data = choose_dataset(dataset, csv_file, text_column, label_column)
        session, caller = session_id(request), caller_id(request)
        sessions.check_room(session, caller)  # before training: a model that could not be kept is not trained
        backbone = load_model(store, DEMO_ID, progress)
        settings, cut = fit_to_backbone(settings, backbone)
        if cut:
            gr.Warning(cut)
        # Cancel sets `stop`; Gradio closing this handler (a client's cancel, a visitor who left) closes `runs`:
        # either way the training thread ends at its next step.
        with switches.switch(session) as stop, closing(train_live(backbone, data, settings, probes, stop)) as runs:
            for run in runs:
                if run.done:  # stored before the last update reaches the visitor, who may then use it at once
                    kept = FineTuned(run.model, backbone.tokenizer, data.label_names, settings.max_length)
                    sessions.put(session, kept, owner=caller)
                progress((run.step, run.total_steps), desc=f"Epoch {max(run.epoch, 1)}/{settings.epochs}", unit="steps")
                # The State gets the run without its model: only the bounded `sessions` store keeps models.
                final = replace(run, model=None) if run.done else None
                yield (status_text(run), loss_frame(run), accuracy_frame(run), probes_frame(run), run_metrics(run),
                       final)  # fmt: skip

    @show_errors
    def explain(run: TrainingRun | None):
        if run is None or not run.done:
            return None, None, ""
        backbone = store.get(DEMO_ID)  # loaded: the run just used it
        return (
            per_class_frame(run),
            confusion_frame(run.after, run.data.label_names),
            reproduce_code(
                store.source(DEMO_ID), run.settings, run.data.label_names, backbone.mixed_precision, backbone.device
            ),
        )

    @show_errors
    def request_stop(request: gr.Request):
        switches.stop_all(session_id(request))

    @show_errors
    def fine_tune_predict(text: str, request: gr.Request = None) -> dict[str, float]:
        return predict(sessions.get(session_id(request)), text)

    @show_errors
    def prepare_download(request: gr.Request):
        return str(save_for_download(sessions.get(session_id(request))))

    @show_errors
    def show_columns(path: str | None):
        if not path:
            return gr.Dropdown(), gr.Dropdown()
        columns, text, label = guess_columns(path)
        return gr.Dropdown(choices=columns, value=text), gr.Dropdown(choices=columns, value=label)

    @show_errors
    def choose_upload():
        return UPLOAD

    # The radio and the file always agree: a file given is the data trained on (see choose_dataset), so picking the
    # built-in set lets go of the file, and removing the file picks the built-in set.
    @show_errors
    def let_go_of_file(choice: str):
        return None if choice == BUILTIN else gr.skip()

    @show_errors
    def choose_builtin():
        return BUILTIN

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
    csv_file.upload(choose_upload, None, dataset, api_visibility="private")
    csv_file.clear(choose_builtin, None, dataset, api_visibility="private")
    dataset.input(let_go_of_file, dataset, csv_file, api_visibility="private")
    attention_change_section(store, DEMO_ID, sessions)  # and /fine_tune_attention


DEMO = Demo(
    id=DEMO_ID,
    title="Fine-tune (MiniLM)",
    default_model=DEFAULT_MODEL,
    load=load_backbone,
    build_tiny=build_tiny_backbone,
    tab=fine_tune_tab,
    hub_repos=backbone_hub_repos,
)
