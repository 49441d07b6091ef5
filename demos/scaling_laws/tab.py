"""Scaling laws, the tab: the shipped grid and its fitted laws at once; a size and a token budget to train live, its
loss drawn on the same axes beside the law's prediction; Stop; the Code accordion; the endpoint /scaling_law."""

from collections.abc import Iterator
from contextlib import closing

import gradio as gr
import pandas as pd

from demos.scaling_laws.code import reproduce_code
from demos.scaling_laws.corpus import LICENCE, NAME
from demos.scaling_laws.figures import EXPONENT_COLUMNS, POINT_COLUMNS, exponents_table, law_figure, points_table, short
from demos.scaling_laws.live import (
    DEFAULT_SIZE,
    DEFAULT_TOKENS,
    LIVE_TIME_LIMIT_S,
    MAX_SEED,
    check_live,
    scaling_law,
)
from demos.scaling_laws.training import GRID_SIZES, SETTINGS, SIZES, size_parameters
from hub.errors import HubError
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors
from hub.visitors import StopSwitches, session_id

DEMO_ID = "scaling-laws"
TOKEN_CHOICES = [2**k for k in range(11, 19)]  # 2,048 to 262,144 training tokens (bytes)
EXAMPLES = [["1 x 12", 8_192, 0], ["2 x 32", 16_384, 0], ["2 x 48", 32_768, 0], ["3 x 64", 8_192, 1]]

EXPLANATION = f"""
**What you are looking at:** small GPT-2-shaped models of 2 thousand to 336 thousand parameters, trained on the
King James Bible (bytes as tokens), and their loss on chapters they never read. Bigger models and more training
text give lower loss along a smooth curve, a *scaling law*: the lines are `L(N, D) = E + A/N^α + B/D^β` fitted to
the dots. Pick a size and a budget to train one more model now (at most {LIVE_TIME_LIMIT_S} s): the red star is its
loss, the red circle what the law predicted for it.
"""

CAVEAT = """
**Scale caveat.** Kaplan et al. and Hoffmann et al. fitted models of millions to billions of parameters trained on
billions of tokens, with losses in nats per *BPE token* of web text; these are models of thousands of parameters
trained for seconds on one CPU, with losses in nats per *byte*. Only the shape compares, not the numbers: at this
scale the exponents also carry the short training (a fixed learning rate, no schedule tuned per size), so they are
not estimates of the published ones.
"""

stop_switches = StopSwitches()


def size_choices() -> list[tuple[str, str]]:
    """(label, size name): each size with its non-embedding parameter count, counted on a model built now."""
    return [
        (
            f"{s.name} ({s.layers} layer{'s' * (s.layers > 1)}, width {s.width}): "
            f"{size_parameters(s):,} parameters{'' if s in GRID_SIZES else ', not in the grid'}",
            s.name,
        )
        for s in SIZES
    ]


def provenance(result: dict) -> str:
    grid = result["grid"]
    commit = (grid.get("commit") or "?")[:10]
    threads = grid.get("threads")
    return (
        f"Grid: {len(result['points'])} points, computed by `python -m bench.scaling_grid` at commit `{commit}` on "
        f"{grid.get('cpu') or 'an unknown CPU'} ({grid.get('dtype')}, {threads} torch thread{'s' * (threads != 1)}) "
        f"in {grid.get('seconds', 0):.0f} s. Corpus: {NAME}; {LICENCE}. "
        f"Each step reads {SETTINGS.batch_size} windows of {SETTINGS.context} bytes; the loss is measured on "
        f"{SETTINGS.eval_windows} windows of held-out chapters."
    )


def live_text(live: dict | None) -> str:
    if live is None:
        return ""
    where = f"step {live['step']} of {live['total_steps']}"
    if live["loss"] is None:
        return (
            f"**Training {live['size']}**: {where}..." if not live["stopped"] else "**Stopped** before the first step."
        )
    if not live["done"] and not live["stopped"]:
        return f"**Training {live['size']}**: {where}; validation loss {live['loss']:.3f} at {short(live['tokens'])} tokens."
    gap = live["loss"] / live["predicted_loss"] - 1
    stopped = (
        f" ({live['stopped']}, after {live['tokens']:,} of {live['tokens_asked']:,} tokens)" if live["stopped"] else ""
    )
    grid = "one of the grid's sizes" if live["in_grid"] else "a size the law never saw"
    return (
        f"**Your run{stopped}:** {live['size']}, {live['parameters']:,} parameters ({grid}), {live['tokens']:,} tokens, "
        f"seed {live['seed']}, {live['seconds']:.1f} s. Validation loss **{live['loss']:.3f}** nats per byte; the "
        f"law predicted **{live['predicted_loss']:.3f}**: the run is **{abs(gap):.1%} {'above' if gap > 0 else 'below'}** "
        "the law."
    )  # fmt: skip


def views(result: dict) -> tuple:
    return (
        law_figure(result),
        exponents_table(result),
        points_table(result),
        provenance(result),
        live_text(result["live"]),
        reproduce_code(result),
    )


def scaling_laws_tab(store: ModelStore) -> None:
    gr.Markdown(EXPLANATION)
    with gr.Row():
        with gr.Column(scale=2):
            size = gr.Dropdown(size_choices(), value=DEFAULT_SIZE, label="Model size (layers x width)")
            tokens = gr.Dropdown(
                [(f"{t:,} bytes ({t // SETTINGS.tokens_per_step} steps)", t) for t in TOKEN_CHOICES],
                value=DEFAULT_TOKENS,
                label="Training tokens",
            )
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (0 = the grid's)")
        with gr.Column(scale=1):
            train_button = gr.Button("Train live", variant="primary", elem_id="scaling-laws-train")
            stop = gr.Button("Stop", variant="stop", elem_id="scaling-laws-stop")
    examples = gr.Examples(
        EXAMPLES, inputs=[size, tokens, seed], label="Examples: click one to train it", elem_id="scaling-laws-examples"
    )
    # ?tab=scaling-laws&size=2%20x%2048&tokens=65536&seed=0, and &run=1 trains it at once
    link_inputs(DEMO_ID, run=train_button, size=size, tokens=tokens, seed=seed)
    status = gr.Markdown(elem_id="scaling-laws-live")
    try:
        first = views(next(scaling_law()))
    except HubError as error:  # no grid shipped: the tab says so, the hub still starts
        first = (None, None, None, str(error), "", "")
    figure = figure_image(
        first[0],
        label="Validation loss against size and training tokens",
        show_label=False,  # the label's badge would cover the left panel's title; each panel has its own
        elem_id="scaling-laws-figure",
    )
    exponents = gr.Dataframe(first[1] if first[1] is not None else pd.DataFrame(columns=EXPONENT_COLUMNS),
                             label="Fitted exponents beside the published ones", interactive=False, wrap=True,
                             column_widths=["30%", "12%", "12%", "9%", "37%"], elem_id="scaling-laws-exponents")  # fmt: skip
    gr.Markdown(CAVEAT)
    about = gr.Markdown(first[3], elem_id="scaling-laws-grid")
    with gr.Accordion("The grid's points", open=False):
        points = gr.Dataframe(first[2] if first[2] is not None else pd.DataFrame(columns=POINT_COLUMNS),
                              interactive=False, show_label=False)  # fmt: skip
    code = code_accordion(first[5])

    @show_errors
    @off_model_thread  # its job trains on the model thread
    def train_live(size: str, tokens: int, seed: int, request: gr.Request = None) -> Iterator[tuple]:
        check_live(size, tokens, seed)  # before anything is shown
        # An update at once: Gradio can close a handler (a cancel, a visitor who leaves) only once it has yielded.
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"**Starting {size}**...", gr.skip()
        with stop_switches.switch(session_id(request)) as stop_switch:
            with closing(scaling_law(size, tokens, seed, stop_switch)) as results:
                drawn = 0  # checkpoints already in the figure: it is drawn again only when the run measured a new one
                for result in results:
                    live = result["live"]
                    if live is None:
                        yield (gr.skip(),) * 6  # nothing new, but a cancel can close the handler here
                    elif live["done"] or live["stopped"]:
                        yield views(result)
                        return  # the run has ended: its last report only says so again
                    else:
                        new_loss = len(live["checkpoints"]) != drawn
                        drawn = len(live["checkpoints"])
                        figure_update = law_figure(result) if new_loss else gr.skip()
                        yield figure_update, gr.skip(), gr.skip(), gr.skip(), live_text(live), gr.skip()

    @show_errors
    @off_model_thread  # at once, not after someone's step
    def request_stop(request: gr.Request = None) -> None:
        stop_switches.stop_all(session_id(request))

    event = gr.on(
        [train_button.click, examples.dataset.click],
        train_live,
        [size, tokens, seed],
        [figure, exponents, points, about, status, code],
        api_visibility="private",
        concurrency_limit=2,
        concurrency_id=DEMO_ID,
        show_progress="minimal",
    )
    stop.click(request_stop, None, None, cancels=[event], queue=False, api_visibility="private")

    @show_errors
    @off_model_thread  # a live run's job trains on the model thread
    def scaling_law_api(size: str | None = None, tokens: int | None = None, seed: int = 0) -> dict:
        """Validation loss of small GPT-2-shaped models against their size and training tokens (a grid computed by bench/scaling_grid.py), the scaling laws fitted to it, and optionally one model trained now.

        Args:
            size: A model to train now, "layers x width": one of "1 x 12", "1 x 16", "1 x 24", "2 x 32", "2 x 48", "2 x 64", "3 x 64", "3 x 96". Default none: no live run.
            tokens: Training tokens (bytes of the corpus) for the live run, 2,048 to 262,144, a multiple of 1,024. Default 16,384 when a size is given. The run stops after 60 s with what it reached.
            seed: Seed of the live run's initial weights and batches, 0 to 2147483647; seed 0 trains a grid size exactly as the grid did. Default 0.

        Returns:
            A stream ending with {"points": [{"parameters": non-embedding parameters, "tokens": training tokens, "loss": validation loss in nats per byte}, ...], "fit": {"E", "A", "alpha", "B", "beta", "rmse"}: the least-squares fit of L(N, D) = E + A/N^alpha + B/D^beta to all the points, "fit_size": {"E", "A", "alpha", "tokens", "rmse"}: L(N) = E + A/N^alpha fitted to the points at the largest token budget, "published": Kaplan et al. 2020 and Hoffmann et al. 2022 exponents with their sources, "grid": how the grid was computed (commit, cpu, dtype, threads, seconds, settings), "live": null without a size, else {"size", "parameters", "tokens", "seed", "loss", "predicted_loss": the fit's L(N, D) for it, "checkpoints": [{"tokens", "loss"}], "seconds", "stopped", "done", ...}}.
        """
        yield from scaling_law(size, tokens, seed)

    gr.api(scaling_law_api, api_name="scaling_law", concurrency_limit=2, concurrency_id=DEMO_ID)
