"""The layer-by-layer tab: the logit lens over a text (layers.py), then how data flows through the model
(data_flow.py), with the endpoint /layer_predictions."""

import gradio as gr
import pandas as pd

from demos.attention.maps import USES
from demos.inside.data_flow import PARTS_COLUMNS, cached_diagram, parts_table
from demos.inside.layers import layer_predictions, lens_code, lens_figure, lens_table, no_word_head_message
from hub.demo import Demo
from hub.inside import DECODER, load_transformer, tokenize
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "layers"
DEFAULT_TEXT = "The Eiffel Tower is in the city of"

EXPLANATION = """
**What you are looking at:** each token becomes a vector, and every block adds a little to it. The *logit lens*
reads those vectors after each layer with the model's own output head: what it would predict if it stopped there.
Rows are layers (top: the bare embeddings; bottom: the real output), columns are the tokens. GPT-2 guesses the
**next** token at each position; BERT guesses the token **at** each position (hide one with `[MASK]`).
"""

EXAMPLES = [
    [DEFAULT_TEXT, DECODER],
    ["Paris is the [MASK] of France.", "encoder"],
    ["The doctor told me to take two [MASK] every day.", "encoder"],
    ["One, two, three, four, five,", DECODER],
]
CHOICES = [("Decoder (GPT-2)", DECODER), ("Encoder (BERT)", "encoder"), ("MiniLM (encoder, no word head)", "minilm")]


def layers_tab(store: ModelStore) -> None:
    gr.Markdown(EXPLANATION)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text", value=DEFAULT_TEXT, lines=2, max_length=2_000)
        with gr.Column(scale=2):
            which = gr.Radio(CHOICES, value=DECODER, label="Model")
            run = gr.Button("Run", variant="primary", elem_id="layers-run")
    examples_place = gr.Column()  # filled below, once the handler the examples run is defined
    notice = gr.Markdown()
    lens = figure_image(label="Logit lens", elem_id="layers-lens")
    numbers = gr.Dataframe(
        pd.DataFrame(columns=["layer"]),
        label="The same numbers: top token and its probability",
        interactive=False,
        elem_id="layers-numbers",
        wrap=True,
    )
    gr.Markdown("### How data flows through this model")
    with gr.Row():
        drawing = figure_image(
            label="How data flows through this model",
            show_label=False,  # the label's badge would cover the top of the drawing; the heading above says it
            elem_id="layers-diagram",
            scale=3,
        )
        sizes = gr.Dataframe(
            pd.DataFrame(columns=PARTS_COLUMNS),
            label="Parts and parameter counts",
            interactive=False,
            wrap=True,
            column_widths=["21%", "21%", "29%", "29%"],
            max_height=900,
            scale=2,
        )
    code = code_accordion()
    link_inputs(
        DEMO_ID, run=run, text=text, model=which
    )  # ?tab=layers&text=...&model=encoder, by /layer_predictions' names

    @show_errors
    def show(text: str, which: str, progress=gr.Progress()):
        """The model's diagram at once, then the lens (the last run's lens is cleared: it belonged to another text)."""
        t = load_transformer(store, which, on_load=lambda message: progress(0, desc=message))
        notice = f"> {no_word_head_message(t)}" if t.word_head() is None else t.notice and f"> {t.notice}"
        model_views = (notice, cached_diagram(t), parts_table(t))
        yield *model_views, None, pd.DataFrame(columns=["layer"]), ""
        if t.word_head() is None:  # the notice already says why there is no lens; the API refuses
            return
        result = layer_predictions(t, text)
        yield (
            *model_views,
            lens_figure(t, result),
            lens_table(t, result),
            lens_code(t, tokenize(t, text).text, store.dtype),
        )

    shown = [notice, drawing, sizes, lens, numbers, code]
    gr.on([run.click, text.submit, which.input], show, [text, which], shown, api_visibility="private")
    with examples_place:  # clicking an example fills the inputs, then runs the button's handler
        gr.Examples(
            EXAMPLES,
            inputs=[text, which],
            outputs=shown,
            fn=show,
            run_on_click=True,
            cache_examples=False,
            label="Examples: click one to run it",
        )

    def layer_predictions_api(text: str, model: str = DECODER) -> dict:
        """The logit lens: what the model would predict if it stopped after each layer, at every position of a text.

        Args:
            text: The text to read, at most 64 tokens; sent to the model exactly as given. For the encoder, hide words with [MASK] (or <mask>, ___).
            model: "decoder" (GPT-2, the text-generation model: the next token at each position; the default) or "encoder" (BERT, the fill-mask model: the token at each position).

        Returns:
            {"tokens": the model's tokens, "layers": one row per layer (row 0 = the embeddings, the last row = the model's own output), each a list with one {"token", "prob"} per position (the top token and its probability as a fraction from 0 to 1), "model", "kind", "masks": positions (from 0) of the mask tokens, "notice"}.
        """
        return layer_predictions(load_transformer(store, model), text)

    gr.api(show_errors(layer_predictions_api), api_name="layer_predictions")


DEMO = Demo(
    id=DEMO_ID,
    title="Layer by layer",
    default_model="",
    load=None,
    build_tiny=None,
    tab=layers_tab,
    uses=USES,
)
