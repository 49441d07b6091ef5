"""The positional encoding tab: the encodings side by side (positional_encoding.py), then the word-order experiment
(word_order.py), with the endpoints /positional_encoding and /word_order."""

import gradio as gr

from demos.attention.maps import USES
from demos.inside.positional_encoding import (
    KINDS,
    MAX_DIMS,
    MAX_POSITIONS,
    comparison_figure,
    encoding_code,
    encoding_figures,
    positional_encoding,
)
from demos.inside.word_order import (
    EXAMPLE_A,
    EXAMPLE_B,
    ORDER_COLUMNS,
    order_code,
    order_headline,
    order_table,
    word_order,
)
from hub.demo import Demo
from hub.inside import ENCODER, load_transformer
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "positional-encoding"

ABOUT = """Attention by itself treats a text as a **bag of tokens**: nothing in it says which token came first. So each
token gets a position vector added to it. Left: that vector for every position (rows) and dimension (columns).
Right: how alike two positions' vectors are (cosine). The original transformer used a fixed **sinusoid**; GPT-2
and BERT **learned** their tables during training."""

ORDER_ABOUT = """### Why order matters: an experiment
The same words in two orders go through BERT twice: with its position embeddings, and with them set to zero.
Without positions, BERT's output vectors are the **same set, only permuted**: it cannot tell the two orders apart.
(GPT-2 is not in this experiment: its causal mask lets each token see only the ones before it, so it sees order
even without positions.)"""

CHOICES = [
    ("Sinusoid (Attention Is All You Need)", "sinusoidal"),
    ("GPT-2, learned", "gpt2"),
    ("BERT, learned", "bert"),
]
ORDER_EXAMPLES = [
    [EXAMPLE_A, EXAMPLE_B],
    ["the cat sat on the mat", "the mat sat on the cat"],
    ["only i love you", "i love only you"],
]


def positional_encoding_tab(store: ModelStore) -> None:
    gr.Markdown(ABOUT)
    first = positional_encoding(store)  # the sinusoid needs no model: the tab opens with a figure
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            kind = gr.Radio(CHOICES, value="sinusoidal", label="Encoding", elem_id="pe-kind")
            positions = gr.Slider(1, MAX_POSITIONS, value=64, step=1, label="Positions")
            dims = gr.Slider(2, MAX_DIMS, value=128, step=2, label="Dimensions (sinusoid only)")
            compare = gr.Button("Compare all three side by side")
            notice = gr.Markdown(elem_id="pe-notice")
        with gr.Column(scale=4):
            with gr.Row():
                values_image, similarity_image = (
                    figure_image(image, label=label, show_label=False, elem_id=elem_id)
                    for image, label, elem_id in zip(
                        encoding_figures(first),
                        ("Values: position × dimension", "Cosine similarity: position × position"),
                        ("pe-values", "pe-similarity"),
                    )
                )
            comparison = figure_image(label="All three", show_label=False, elem_id="pe-comparison", visible=False)
    code = code_accordion(encoding_code(first, store.dtype))

    gr.Markdown(ORDER_ABOUT)
    with gr.Row():
        text_a = gr.Textbox(EXAMPLE_A, label="Text A", max_lines=2)
        text_b = gr.Textbox(EXAMPLE_B, label="Text B: the same words in another order", max_lines=2)
    run_order = gr.Button("Run both orders through BERT", variant="primary")
    order_examples_place = gr.Column()  # filled below, once the handler the examples run is defined
    headline = gr.Markdown(elem_id="pe-order-headline")
    table = gr.Dataframe(
        headers=ORDER_COLUMNS,
        label="Each token of A and its matched partner in B",
        interactive=False,
        wrap=True,  # six columns fit a projector's 1024 pixels only when their headers and cells wrap
        elem_id="pe-order",
    )
    order_code_box = code_accordion()
    # ?tab=positional-encoding&kind=gpt2&positions=256, or &text_a=...&text_b=...: the endpoints' parameter names
    link_inputs(DEMO_ID, text_a=text_a, text_b=text_b, kind=kind, positions=positions, dims=dims)

    def on_load(progress: gr.Progress):
        return lambda message: progress(0, desc=message)

    @show_errors
    def show(kind, positions, dims, progress=gr.Progress()):
        e = positional_encoding(store, kind, positions, dims, on_load(progress))
        values, similarity = encoding_figures(e)
        return values, similarity, e.notice, encoding_code(e, store.dtype)

    @show_errors
    def show_all(positions, dims, progress=gr.Progress()):
        encodings = [positional_encoding(store, k, positions, dims, on_load(progress)) for k in KINDS]
        notices = " ".join(dict.fromkeys(e.notice for e in encodings if e.notice))
        return gr.Image(comparison_figure(encodings), visible=True), notices

    @show_errors
    def show_order(text_a, text_b, progress=gr.Progress()):
        r = word_order(load_transformer(store, ENCODER, on_load(progress)), text_a, text_b)
        headline_text = (f"> {r.notice}\n\n" if r.notice else "") + order_headline(r)
        return headline_text, order_table(r), order_code(r, text_a, text_b, store.dtype)

    private = {"api_visibility": "private", "concurrency_limit": 2}
    # change, not release: a link that sets the positions or dimensions redraws too (always_last: a drag sends
    # one request at a time, then its last value).
    gr.on(
        [kind.change, positions.change, dims.change],
        show,
        [kind, positions, dims],
        [values_image, similarity_image, notice, code],
        trigger_mode="always_last",
        **private,
    )
    compare.click(show_all, [positions, dims], [comparison, notice], **private)
    order_views = [headline, table, order_code_box]
    gr.on([run_order.click, text_a.submit, text_b.submit], show_order, [text_a, text_b], order_views, **private)
    with order_examples_place:  # clicking an example fills both texts, then runs the button's handler
        gr.Examples(
            ORDER_EXAMPLES,
            inputs=[text_a, text_b],
            outputs=order_views,
            fn=show_order,
            run_on_click=True,
            cache_examples=False,
            label="Examples: click one to run it",
        )

    # The HTTP API: raw JSON values go straight to the same cores the page uses, checked there.
    @show_errors
    def positional_encoding_api(kind: str = "sinusoidal", positions: int = 64, dims: int = 128) -> dict:
        """A positional encoding (one vector per position) and the cosine similarity between every two positions.

        Args:
            kind: "sinusoidal" (the formula of Attention Is All You Need; the default), "gpt2" (GPT-2's learned table) or "bert" (BERT's learned table).
            positions: How many positions, from the first: 1 to 1024. Default 64. A learned table stops at the positions it has (said in "notice").
            dims: Dimensions of the sinusoid, an even number from 2 to 1024. Default 128. A learned table has its model's width.

        Returns:
            {"kind", "model": where a learned table comes from ("" for the sinusoid), "positions", "dims", "matrix": positions x dims values, "similarity": positions x positions cosine similarities from -1 to 1, "notice"}.
        """
        return positional_encoding(store, kind, positions, dims).as_json()

    @show_errors
    def word_order_api(text_a: str = EXAMPLE_A, text_b: str = EXAMPLE_B) -> dict:
        """The same words in two orders through BERT, with its position embeddings and with them set to zero.

        Args:
            text_a: A text, at most 64 tokens. Default "the dog bit the man".
            text_b: The same words as text_a in another order. Default "the man bit the dog".

        Returns:
            {"model", "tokens_a", "tokens_b", "without_positions" and "with_positions": each {"largest_difference": the largest difference between matched output vectors, "partner": for each token of A the position (from 0) of its matched token in B, "difference": per token}, "typical_value": the mean size of an output value, "dtype", "notice"}.
        """
        return word_order(load_transformer(store, ENCODER), text_a, text_b).as_json()

    gr.api(positional_encoding_api, api_name="positional_encoding", concurrency_limit=2)
    gr.api(word_order_api, api_name="word_order", concurrency_limit=2)


DEMO = Demo(
    id=DEMO_ID,
    title="Positional encoding",
    default_model="",
    load=None,
    build_tiny=None,
    tab=positional_encoding_tab,
    uses=USES,
)
