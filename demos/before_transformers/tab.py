"""Before transformers, the tab: train an RNN, a CNN and a small self-attention model live on one task, then see
their accuracy against length, what reading a sequence costs each of them, and the code that reproduces the race."""

from contextlib import closing

import gradio as gr

from demos.before_transformers.code import reproduce_code
from demos.before_transformers.figures import accuracy_figure, cost_figure
from demos.before_transformers.models import ATTENTION_LAYERS, CNN_KERNEL, CNN_LAYERS, KINDS, NAMES
from demos.before_transformers.race import (
    DEFAULTS,
    LIMITS,
    MAX_STEP_TOKENS,
    Progress,
    Stopped,
    check_settings,
    sequence_race,
)
from demos.before_transformers.task import SYMBOLS
from hub.demo import Demo
from hub.errors import HubError
from hub.jobs import Job
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors
from hub.visitors import StopSwitches, session_id

DEMO_ID = "before-transformers"
TIME_LIMIT_S = 240  # a race stops after this long whoever started it (the defaults take well under a minute)
UPDATE_EVERY_S = 0.25

ABOUT = f"""**What you are looking at:** three models of about the same size (an LSTM, a 1-D CNN and a small
transformer encoder) are trained here, live, on the same task, then tested on new sequences of growing length.
**The task:** {SYMBOLS} kinds of symbols in a row, then a question "what was symbol number *i*?" about the first
half: the answer is always far back, and nobody knows which symbol will be asked until the end."""

EXAMPLES = [[64, 0, 500], [64, 1, 500], [32, 0, 500], [128, 0, 200]]


def progress_line(progress: Progress) -> str:
    name = NAMES[KINDS[progress.model]]
    loss = f", loss {progress.loss:.3f}" if progress.loss is not None else ""
    return f"**Training {progress.model + 1} of 3: {name}**, step {progress.step} of {progress.steps}{loss}"


def summary(result: dict) -> str:
    """What this run shows, in numbers from the run itself (and said plainly when a claim does not hold)."""
    models, lengths, field = result["models"], result["lengths"], result["cnn_receptive_field"]
    longest = lengths[-1]
    last = {kind: models[kind]["accuracy"][-1] for kind in KINDS}
    gap = last["attention"] - last["rnn"]
    lines = [
        f"**At {longest} tokens:** attention {last['attention']:.0%}, RNN {last['rnn']:.0%}, "
        f"CNN {last['cnn']:.0%} (chance {result['chance']:.1%})."
    ]
    if last["attention"] >= 0.9 and gap >= 0.2:
        lines.append(
            f"Attention reaches the answer directly, one step from the question, and is {gap:.0%} points above "
            "the RNN, which had to carry every early symbol through its state, one token at a time."
        )
    else:
        lines.append(
            f"In this run attention is {gap:+.0%} points from the RNN at the longest length: with these settings "
            "the race does not show attention's advantage clearly (try more training steps or the default settings)."
        )
    beyond = [a for n, a in zip(lengths, models["cnn"]["accuracy"]) if n > field]
    within = [a for n, a in zip(lengths, models["cnn"]["accuracy"]) if n <= field]
    if beyond:
        mean_beyond = sum(beyond) / len(beyond)
        near = abs(mean_beyond - result["chance"]) < 0.05
        lines.append(
            f"The CNN sees only the last {field} tokens ({CNN_LAYERS} layers of width {CNN_KERNEL}): past that "
            f"length its accuracy averages {mean_beyond:.0%}, "
            + ("chance level, as it must be." if near else "not at chance: the run shows more than its window.")
        )
    if within:
        lines.append(
            f"Within its field (lengths up to {field}) it reached {max(within):.0%} at best: it sees the answer "
            "there, but this budget teaches it the lookup only partly."
        )
    params = ", ".join(f"{NAMES[k]} {models[k]['parameters']:,}" for k in KINDS)
    lines.append(f"Parameters: {params}.")
    seconds = result.get("train_seconds")
    if seconds:
        lines.append("Training time here: " + ", ".join(f"{k} {seconds[k]:.1f} s" for k in KINDS) + ".")
    return "  \n".join(lines)


COST_NOTE = f"""Each forward pass above reads one sequence on this machine's CPU. The RNN needs one step per token,
each waiting for the last; the CNN and attention need one step per layer ({CNN_LAYERS} and {ATTENTION_LAYERS}),
each step working on all positions at once, which parallel hardware does in one go. Dashed: the longest path from
the first token to the last (RNN: n-1 state updates; CNN: the convolutions a stack of width {CNN_KERNEL} needs to
connect them; attention: 1). On a CPU reading one short sequence, these small models all take well under a
millisecond: the numbers say which was faster here."""

switches = StopSwitches()  # Stop reaches the visitor's race through these


def before_transformers_tab(store: ModelStore) -> None:
    gr.Markdown(ABOUT)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            label, low, high = LIMITS["length_max"]
            length_max = gr.Slider(low, high, DEFAULTS.length_max, step=8, label=label, elem_id="bt-length-max")
            label, low, high = LIMITS["steps"]
            steps = gr.Slider(low, high, DEFAULTS.steps, step=10, label=label, elem_id="bt-steps")
            label, low, high = LIMITS["seed"]
            seed = gr.Number(DEFAULTS.seed, precision=0, minimum=low, maximum=high, label=label, elem_id="bt-seed")
            gr.Markdown(
                f"Each model trains for the same steps on the same batches (64 sequences of one length per step, "
                f"the lengths in turn). Training steps x longest length is at most {MAX_STEP_TOKENS:,}."
            )
            with gr.Row():
                run = gr.Button("Train and race", variant="primary", elem_id="bt-run")
                stop = gr.Button("Stop", variant="stop", elem_id="bt-stop")
            examples = gr.Examples(EXAMPLES, inputs=[length_max, seed, steps], label="Examples: click one to run it")
            link_inputs(DEMO_ID, run=run, length_max=length_max, seed=seed, steps=steps)
        with gr.Column(scale=3):
            step_line = gr.Markdown("Press **Train and race** to start.", elem_id="bt-step")
            accuracy_image = figure_image(label="Held-out accuracy against length", elem_id="bt-accuracy")
            headline = gr.Markdown(elem_id="bt-summary")
    cost_image = figure_image(label="What reading one sequence costs", elem_id="bt-cost")
    gr.Markdown(COST_NOTE)
    with gr.Accordion("All numbers (what the HTTP API returns)", open=False):
        result_json = gr.JSON(label="Result", elem_id="bt-result")
    code = code_accordion()
    step_state = gr.State("")  # a State: the API leaves it out, so /sequence_race returns the result alone

    @show_errors
    @off_model_thread  # its job runs the race on the model thread
    def race(length_max: int = DEFAULTS.length_max, seed: int = DEFAULTS.seed, steps: int = DEFAULTS.steps,
             request: gr.Request = None, progress=gr.Progress()):  # fmt: skip
        """Train an RNN (LSTM), a 1-D CNN and a self-attention encoder of about the same size on the same task ("what was symbol number i?", asked at the end about the first half), then measure each on new sequences of growing length.

        Args:
            length_max: The longest sequence length, 8 to 128; the race runs at 8 lengths evenly spaced up to it. Default 64.
            seed: Seed of the models' starting weights and of the training and held-out data, 0 to 2147483647: the same seed gives the same accuracies. Default 0.
            steps: Training steps per model (64 sequences each), 10 to 1000; steps x length_max is at most 96,000. Default 500.

        Returns:
            {"lengths": the lengths, "chance": the accuracy of guessing (1/8), "models": {"rnn" | "cnn" | "attention": {"parameters": int, "accuracy": held-out accuracy per length (fractions 0 to 1), "ms_per_sequence": measured forward time for one sequence per length, "sequential_steps": per length, "longest_path": operations between the first and last token per length}}, "cnn_receptive_field": tokens the CNN's last position sees, "train_seconds": per model, "settings"}. Streams progress (an empty update) while training.
        """
        settings = check_settings(length_max, seed, steps)
        # An empty update first: Gradio can close (cancel) a handler only once it has yielded.
        yield gr.skip(), "Starting the race..."

        def work(job: Job) -> None:
            try:
                sequence_race(settings.length_max, settings.seed, settings.steps, job.should_stop, job.post)
            except Stopped as stopped:
                if job.out_of_time():
                    raise HubError(
                        f"The race stopped at the time limit of {TIME_LIMIT_S} s ({stopped}): this server is busy; "
                        "try fewer steps or a shorter length."
                    ) from None

        last = None
        with switches.switch(session_id(request)) as stop_switch:
            job = Job(TIME_LIMIT_S, stop_switch)
            with closing(
                job.run(work, name="sequence-race", update_every_s=UPDATE_EVERY_S, on_model_thread=True)
            ) as updates:
                for last in updates:
                    if last.result is not None:
                        yield last.result, "**Done.**"
                        return
                    progress((last.model * last.steps + last.step, 3 * last.steps), desc="Training", unit="steps")
                    yield gr.skip(), progress_line(last)
        where = progress_line(last).replace("**", "") if last else "before training began"
        yield gr.skip(), f"**Stopped** ({where})."

    @show_errors
    @off_model_thread  # at once, not after someone's step
    def request_stop(request: gr.Request = None) -> None:
        switches.stop_all(session_id(request))

    @show_errors
    def show_step(line: str) -> str:
        return line

    @show_errors
    def explain(result: dict | None, line: str):
        if not result or not line.startswith("**Done"):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        s = result["settings"]
        code_text = reproduce_code(s["length_max"], s["seed"], s["steps"])
        return accuracy_figure(result), cost_figure(result), summary(result), code_text

    event = gr.on(
        [run.click, examples.dataset.click],
        race,
        [length_max, seed, steps],
        [result_json, step_state],
        api_name="sequence_race",
        concurrency_limit=1,  # one race at a time per process: it takes the CPU
        concurrency_id=DEMO_ID,
        show_progress="minimal",
        show_progress_on=[step_line],
    )
    event.then(
        explain, [result_json, step_state], [accuracy_image, cost_image, headline, code], api_visibility="private"
    )
    step_state.change(show_step, step_state, step_line, queue=False, show_progress="hidden", api_visibility="private")
    stop.click(request_stop, None, None, cancels=[event], queue=False, api_visibility="private")


DEMO = Demo(
    id=DEMO_ID,
    title="Before transformers",
    default_model="",
    load=None,
    build_tiny=None,
    tab=before_transformers_tab,
)
