"""Fine-tune's tab: pick a dataset and the hyperparameters, watch the loss and the held-out accuracy live, compare
the probe texts before and after, then classify with the fine-tuned model or download it (views.py says what a run
shows; data.py, model.py and training.py do the work)."""

from contextlib import closing
from dataclasses import replace

import gradio as gr

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
    TrainingRun,
    check_settings,
    fit_to_backbone,
    reproduce_code,
    run_metrics,
    train_live,
)
from demos.fine_tune.views import (
    EPOCH_TICKS,
    PER_CLASS_HEADERS,
    accuracy_frame,
    confusion_frame,
    loss_frame,
    per_class_frame,
    probes_frame,
    status_text,
    stopped_text,
)
from hub.demo import Demo
from hub.links import link_inputs
from hub.model_thread import off_model_thread
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
# The tab


def setting_slider(name: str, step: float) -> gr.Slider:
    label, low, high = LIMITS[name]
    return gr.Slider(low, high, value=getattr(DEFAULTS, name), step=step, label=label, info=HELP[name])


def fine_tune_tab(store: ModelStore) -> None:
    sessions = SessionModels(capacity=store.settings.fine_tune_places)  # the operator sizes it
    switches = StopSwitches()  # Stop reaches the visitor's training thread through these
    shown: dict[str, tuple[int, int]] = {}  # session -> (step, total steps) last shown, while its training runs
    stopped: dict[str, str] = {}  # session -> the message for a run they stopped, until the tab has shown it

    gr.Markdown(
        "**Why fine-tune?** A pretrained transformer already understands language; a few minutes of training on a few "
        "hundred labelled examples turn it into a classifier for *your* labels. **The steps:** put a new, untrained "
        "classification head on the backbone, show it labelled texts in small batches, and nudge every weight to "
        "reduce the loss; texts held out from training tell you whether it learnt or just memorised."
    )
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                train = gr.Button("Fine-tune", variant="primary", elem_id="fine-tune-start")
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="fine-tune-stop")
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
            probe_texts = gr.Textbox(
                "\n".join(DEFAULT_PROBES), lines=4, label="Probe texts (one per line): classified before and after"
            )
            with gr.Accordion("Hyperparameters", open=True):
                epochs = setting_slider("epochs", step=1)
                learning_rate = gr.Number(
                    value=DEFAULTS.learning_rate,
                    label=LIMITS["learning_rate"][0],
                    info=HELP["learning_rate"],
                    elem_id="fine-tune-learning-rate",
                )
                batch_size = setting_slider("batch_size", step=1)
                max_length = setting_slider("max_length", step=8)
                warmup = setting_slider("warmup", step=0.05)
                weight_decay = setting_slider("weight_decay", step=0.01)
                freeze = gr.Checkbox(value=DEFAULTS.freeze_backbone, label="Freeze the backbone", info=HELP["freeze"])
                seed = gr.Number(
                    value=DEFAULTS.seed,
                    precision=0,
                    label=LIMITS["seed"][0],
                    info=HELP["seed"],
                    elem_id="fine-tune-seed",
                )
            # ?tab=fine-tune&epochs=1&learning_rate=0.0005... and a Copy link button (a CSV cannot travel in a link)
            link_inputs(
                DEMO_ID,
                run=train,
                dataset=dataset,
                epochs=epochs,
                learning_rate=learning_rate,
                batch_size=batch_size,
                max_length=max_length,
                warmup=warmup,
                weight_decay=weight_decay,
                freeze_backbone=freeze,
                seed=seed,
                probe_texts=probe_texts,
            )
        with gr.Column(scale=3):
            status = gr.Markdown("Press **Fine-tune** to start.", elem_id="fine-tune-status")
            # "export" saves the plot as a PNG at twice its size on the page (Gradio's own button).
            loss_plot = gr.LinePlot(
                x="step",
                y="loss",
                x_title="training step",
                label="Training loss",
                height=220,
                buttons=["export", "fullscreen"],
                elem_id="fine-tune-loss",
            )
            accuracy_plot = gr.LinePlot(
                x="epoch",
                y="held-out accuracy",
                y_title="accuracy",
                sort=EPOCH_TICKS,
                y_lim=[0, 1],
                y_axis_format=".0%",
                label="Held-out accuracy by epoch",
                height=200,
                buttons=["export", "fullscreen"],
                elem_id="fine-tune-accuracy",
            )
            probes_table = gr.Dataframe(
                headers=["text", "before training", "after training"],
                label="Probe texts: the most probable class",
                interactive=False,
                wrap=True,
                column_widths=["50%", "25%", "25%"],
                elem_id="fine-tune-probes",
            )
            with gr.Accordion("Results on the held-out texts", open=True):
                per_class = gr.Dataframe(
                    headers=PER_CLASS_HEADERS,
                    label="Precision and recall per class",
                    interactive=False,
                    wrap=True,
                    elem_id="fine-tune-per-class",
                )
                confusion = gr.Dataframe(
                    headers=["true class", "predicted ..."],
                    label="Confusion matrix after training (held-out texts)",
                    interactive=False,
                    wrap=True,
                    elem_id="fine-tune-confusion",
                )
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
    @off_model_thread  # its training job hands the model thread one step at a time
    def fine_tune(dataset=BUILTIN, csv_file=None, text_column=TEXT_COLUMN, label_column=LABEL_COLUMN,
                  epochs=DEFAULTS.epochs, learning_rate=DEFAULTS.learning_rate, batch_size=DEFAULTS.batch_size,
                  max_length=DEFAULTS.max_length, warmup=DEFAULTS.warmup, weight_decay=DEFAULTS.weight_decay,
                  freeze_backbone=DEFAULTS.freeze_backbone, seed=DEFAULTS.seed, probe_texts="\n".join(DEFAULT_PROBES),
                  request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        """Fine-tune a small pretrained transformer (MiniLM) as a text classifier, streaming its progress.

        Args:
            dataset: "Built-in: sentiment of short reviews" (default) or "My CSV file"; a CSV file sent in csv_file is trained on whichever is chosen.
            csv_file: A CSV file (UTF-8, at most 2 MB) with a text column and a label column, at least 2 classes with a few rows each; default none.
            text_column: The CSV's column holding the texts. Default "text".
            label_column: The CSV's column holding the labels. Default "label".
            epochs: Passes over the training texts, 1 to 10. Default 3.
            learning_rate: AdamW's peak learning rate, 1e-6 to 1e-2. Default 2e-4.
            batch_size: Texts per training step, 1 to 64. Default 8.
            max_length: Tokens read per text (longer texts are cut), 8 to 256, at most what the backbone reads. Default 64.
            warmup: Fraction of the steps over which the learning rate rises from 0, 0 to 0.5. Default 0.1.
            weight_decay: AdamW's weight decay, 0 to 0.5. Default 0.01.
            freeze_backbone: True trains only the new classification head. Default false.
            seed: Seed of the new head's weights and of the shuffling, 0 to 2147483647: the same seed and settings train the same model. Default 0.
            probe_texts: Texts, one per line, classified before and after training. Default six short reviews.

        Returns:
            An empty update first (from then on a cancel stops the run), then a stream of (status text, loss by step, held-out accuracy by epoch, probe texts with their most probable class before and after, metrics); the last metrics hold "done", "step", "total_steps", "losses", "held_out_accuracy_by_epoch" and "before"/"after" with accuracy, per-class precision, recall, f1 and support (fractions 0 to 1) and the confusion matrix. The model is then this session's, for /fine_tune_predict and /fine_tune_attention.
        """
        settings = check_settings(
            epochs, learning_rate, batch_size, max_length, warmup, weight_decay, freeze_backbone, seed
        )
        probes = check_probes(probe_texts)
        data = choose_dataset(dataset, csv_file, text_column, label_column)
        session, caller = session_id(request), caller_id(request)
        sessions.check_room(session, caller)  # before training: a model that could not be kept is not trained
        # An empty update first: Gradio can close (cancel) a handler only once it has yielded, and the first progress
        # comes after the untrained model's evaluation, which can take seconds.
        yield (gr.skip(),) * 6
        backbone = load_model(store, DEMO_ID, progress)
        settings, cut = fit_to_backbone(settings, backbone)
        if cut:
            gr.Warning(cut)
        # Stop sets `stop`; Gradio closing this handler (a client's cancel, a visitor who left) closes `runs`:
        # either way the training thread ends at its next step, and its model is not kept.
        try:
            with switches.switch(session) as stop, closing(train_live(backbone, data, settings, probes, stop)) as runs:
                for run in runs:
                    if run.done:  # stored before the last update reaches the visitor, who may then use it at once
                        kept = FineTuned(run.model, backbone.tokenizer, data.label_names, settings.max_length)
                        sessions.put(session, kept, owner=caller)
                    shown[session] = (run.step, run.total_steps)
                    progress(
                        (run.step, run.total_steps), desc=f"Epoch {max(run.epoch, 1)}/{settings.epochs}", unit="steps"
                    )
                    # The State gets the run without its model: only the bounded `sessions` store keeps models.
                    final = replace(run, model=None) if run.done else None
                    probes_view = None if run.stopped == "cancelled" else probes_frame(run)  # no half-drawn table
                    yield (status_text(run, sessions.holds(session)), loss_frame(run), accuracy_frame(run), probes_view,
                           run_metrics(run), final)  # fmt: skip
        finally:
            shown.pop(session, None)

    @show_errors
    def begin():
        """The last run's results go as a new one starts; Stop can be pressed while it runs."""
        return None, None, "", gr.Button(interactive=True)

    @show_errors
    def explain(run: TrainingRun | None, request: gr.Request):
        """After a run ends, is stopped or fails: its tables, its code, and Stop disabled again. A stopped run's
        message is written here too, as the last word: an update of the stream sent just before Gradio cancelled it
        may have reached the page after the Stop button's own message."""
        message = stopped.pop(session_id(request), None)
        if run is None or not run.done:
            status_update = message if message is not None else gr.skip()
            probes_update = None if message is not None else gr.skip()
            return None, None, "", gr.Button(interactive=False), status_update, probes_update
        backbone = store.get(DEMO_ID)  # loaded: the run just used it
        code_text = reproduce_code(
            store.source(DEMO_ID), run.settings, run.data.label_names, backbone.mixed_precision, backbone.device
        )
        return (
            per_class_frame(run),
            confusion_frame(run.after, run.data.label_names),
            code_text,
            gr.Button(interactive=False),
            gr.skip(),
            gr.skip(),
        )

    @show_errors
    @off_model_thread  # at once, not after someone's step
    def request_stop(request: gr.Request):
        """Stop: the training thread ends at its next step; the page says so at once and drops the half-drawn
        tables (the loss curve stays: it shows how far the run got)."""
        session = session_id(request)
        switches.stop_all(session)
        step, total = shown.get(session, (None, None))
        message = stopped[session] = stopped_text(step, total, sessions.holds(session))
        return message, None, None, None

    @show_errors
    def fine_tune_predict(text: str, request: gr.Request = None) -> dict[str, float]:
        """Classify a text with the model this session fine-tuned last (call /fine_tune first, with the same client).

        Args:
            text: The text to classify, at most 5,000 characters; read exactly as given (cut to the max_length tokens the model was trained with).

        Returns:
            {"label": the most probable class, "confidences": [{"label": class, "confidence": probability from 0 to 1}, ...] for every class of the training data}.
        """
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
    # Registered first: the page runs a trigger's events in order, and the training's own event lasts until it ends.
    train.click(begin, None, [per_class, confusion, code, stop], queue=False, api_visibility="private")
    event = train.click(
        fine_tune,
        inputs,
        [status, loss_plot, accuracy_plot, probes_table, metrics, last_run],
        api_name="fine_tune",
        concurrency_limit=1,  # one training at a time per process; others see their place in the queue
    )
    # .then runs after the run ends, fails or is cancelled (Gradio's frontend triggers it after a cancel too).
    event.then(explain, last_run, [per_class, confusion, code, stop, status, probes_table], api_visibility="private")
    stop.click(
        request_stop,
        None,
        [status, probes_table, per_class, confusion],
        cancels=[event],
        queue=False,
        api_visibility="private",
    )
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
