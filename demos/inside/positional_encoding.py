"""Positional encoding: how a transformer knows word order. The sinusoid of "Attention Is All You Need" beside the
tables GPT-2 and BERT learned, and an experiment: BERT without its positions cannot tell two word orders apart."""

from collections import Counter
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.optimize import linear_sum_assignment

from demos.attention.maps import USES
from hub.checks import check_choice, check_int
from hub.demo import Demo
from hub.errors import HubError
from hub.figures import figure_png
from hub.inside import DECODER, ENCODER, Transformer, load_transformer, tokenize
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "positional-encoding"
KINDS = ("sinusoidal", "gpt2", "bert")
MAX_POSITIONS = 1024  # GPT-2's whole table; a 1024 x 1024 similarity is already about 20 MB of JSON
MAX_DIMS = 1024
EXAMPLE_A, EXAMPLE_B = "the dog bit the man", "the man bit the dog"


# ---------------------------------------------------------------------------------------------------------
# The work: the encodings


@dataclass
class Encoding:
    kind: str
    model: str  # where the table comes from ("" for the sinusoid: it is a formula)
    matrix: np.ndarray  # positions x dimensions
    similarity: np.ndarray  # positions x positions, cosine
    notice: str = ""

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "positions": len(self.matrix),
            "dims": self.matrix.shape[1],
            "matrix": self.matrix.tolist(),
            "similarity": self.similarity.tolist(),
            "notice": self.notice,
        }


def sinusoid(positions: int, dims: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (Vaswani et al. 2017)."""
    pos = np.arange(positions)[:, None]
    two_i = np.arange(0, dims, 2)[None, :]
    angle = pos / 10000 ** (two_i / dims)
    matrix = np.zeros((positions, dims))
    matrix[:, 0::2] = np.sin(angle)
    matrix[:, 1::2] = np.cos(angle)
    return matrix


def cosine_similarity(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.maximum(norms, 1e-12)  # a zero row would give NaN, which JSON cannot carry
    return unit @ unit.T


def label(kind: str, model: str = "") -> str:
    """How a person names an encoding: the sinusoid, or the model whose table it is (MiniLM when it stands in)."""
    if kind == "sinusoidal":
        return "Sinusoid"
    return "GPT-2" if kind == "gpt2" else "MiniLM" if "minilm" in model.lower() else "BERT"


def positional_encoding(
    store: ModelStore, kind: object = "sinusoidal", positions: object = 64, dims: object = 128, on_load=None
) -> Encoding:
    """The encoding of the first `positions` positions and the cosine similarity between every two of them."""
    kind = check_choice(kind, "Kind", KINDS)
    positions = check_int(positions, "Positions", 1, MAX_POSITIONS)
    dims = check_int(dims, "Dimensions", 2, MAX_DIMS)
    if kind == "sinusoidal":
        if dims % 2:
            raise HubError(f"Dimensions must be even (a sine and a cosine per frequency), got {dims}.")
        matrix = sinusoid(positions, dims)
        return Encoding(kind, "", matrix, cosine_similarity(matrix))
    t = load_transformer(store, DECODER if kind == "gpt2" else ENCODER, on_load)
    table = t.position_table
    notice = t.notice
    if positions > len(table):  # a learned table has no row past the longest text the model was trained on
        notice = (
            f"{notice} {label(kind, t.name)} learned {len(table)} positions only: showing all {len(table)}.".strip()
        )
        positions = len(table)
    matrix = table[:positions].detach().float().cpu().numpy().astype(np.float64)  # bf16 weights -> plain numbers
    return Encoding(kind, t.name, matrix, cosine_similarity(matrix), notice)


# ---------------------------------------------------------------------------------------------------------
# The work: why order matters


@dataclass
class Matching:
    partner: list[int]  # partner[i] = the position in B of the token matched with A's token i
    difference: list[float]  # the largest |a - b| over the output vector's components, per matched pair

    @property
    def largest(self) -> float:
        return max(self.difference)


@dataclass
class WordOrder:
    model: str
    tokens_a: list[str]
    tokens_b: list[str]
    without_positions: Matching
    with_positions: Matching
    typical: float  # the mean |value| of the output vectors, to read the differences against
    dtype: str
    notice: str = ""

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "tokens_a": self.tokens_a,
            "tokens_b": self.tokens_b,
            "without_positions": {"largest_difference": self.without_positions.largest, **vars(self.without_positions)},
            "with_positions": {"largest_difference": self.with_positions.largest, **vars(self.with_positions)},
            "typical_value": self.typical,
            "dtype": self.dtype,
            "notice": self.notice,
        }


def encoder_outputs(t: Transformer, ids: torch.Tensor, positions: bool = True) -> torch.Tensor:
    """BERT's output vectors computed from its own modules, as BertEmbeddings.forward does (same order of sums),
    with or without the position embeddings. Nothing is hooked: other visitors use the same model meanwhile."""
    embeddings = t.body.embeddings
    with torch.inference_mode():
        h = embeddings.word_embeddings(ids) + embeddings.token_type_embeddings(torch.zeros_like(ids))
        if positions:
            h = h + embeddings.position_embeddings(torch.arange(ids.shape[1], device=ids.device))[None]
        h = embeddings.dropout(embeddings.LayerNorm(h))  # dropout is the identity in eval mode
        return t.body.encoder(h).last_hidden_state[0].float().cpu()  # no mask: one text, every token sees all


def match(ids_a: list[int], ids_b: list[int], out_a: np.ndarray, out_b: np.ndarray) -> Matching:
    """Pair each token of A with the same token in B (a repeated word has several candidates) so that the paired
    vectors are as close as possible (Hungarian algorithm on the distances)."""
    partner = [0] * len(ids_a)
    for token in set(ids_a):
        rows = [i for i, t in enumerate(ids_a) if t == token]
        columns = [j for j, t in enumerate(ids_b) if t == token]
        distances = np.linalg.norm(out_a[rows][:, None] - out_b[columns][None], axis=-1)
        for r, c in zip(*linear_sum_assignment(distances)):
            partner[rows[r]] = columns[c]
    difference = [float(np.abs(out_a[i] - out_b[j]).max()) for i, j in enumerate(partner)]
    return Matching(partner, difference)


def word_order(t: Transformer, text_a: object = EXAMPLE_A, text_b: object = EXAMPLE_B) -> WordOrder:
    """The same words in two orders through an encoder, with its position embeddings and with them set to zero."""
    if t.kind != ENCODER:
        raise HubError("The order experiment runs an encoder (BERT): a decoder's causal mask already sees order.")
    a, b = tokenize(t, text_a), tokenize(t, text_b)
    ids_a, ids_b = a.ids[0].tolist(), b.ids[0].tolist()
    if sorted(ids_a) != sorted(ids_b):
        extra_a = " ".join((Counter(a.tokens) - Counter(b.tokens)).elements()) or "nothing"
        extra_b = " ".join((Counter(b.tokens) - Counter(a.tokens)).elements()) or "nothing"
        raise HubError(
            "The two texts must hold the same tokens in another order. "
            f"A has more of: {extra_a}; B has more of: {extra_b}."
        )
    results = {}
    typical = 0.0
    for positions in (False, True):
        out_a = encoder_outputs(t, a.ids, positions).numpy().astype(np.float64)
        out_b = encoder_outputs(t, b.ids, positions).numpy().astype(np.float64)
        results[positions] = match(ids_a, ids_b, out_a, out_b)
        typical = float(np.abs(out_a).mean())
    notice = t.notice
    if ids_a == ids_b:
        notice = f"{notice} The two texts are in the same order: swap some words in B.".strip()
    dtype = str(t.model.dtype).removeprefix("torch.")
    return WordOrder(t.name, a.tokens, b.tokens, results[False], results[True], typical, dtype, notice)


# ---------------------------------------------------------------------------------------------------------
# What the page shows


def _draw_values(fig: Figure, ax, e: Encoding, title: str) -> None:
    # Learned tables have a few large outliers (GPT-2's position 0): scale to the 99th percentile so the rest shows.
    top = 1.0 if e.kind == "sinusoidal" else float(np.percentile(np.abs(e.matrix), 99)) or 1.0
    image = ax.imshow(e.matrix, cmap="RdBu_r", vmin=-top, vmax=top, aspect="auto", interpolation="auto")
    ax.set(title=title, xlabel="dimension →", ylabel="← position")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, extend="neither" if e.kind == "sinusoidal" else "both")


def _draw_similarity(fig: Figure, ax, e: Encoding, title: str) -> None:
    # interpolation "auto" smooths where a table has more rows than the figure has pixels: with "nearest", most
    # of a 1024-position diagonal would fall between pixels and vanish.
    image = ax.imshow(e.similarity, cmap="RdBu_r", vmin=-1, vmax=1, aspect="equal", interpolation="auto")
    ax.set(title=title, xlabel="position →", ylabel="← position")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)


def _name(e: Encoding) -> str:
    return label(e.kind, e.model) + ("" if e.kind == "sinusoidal" else " (learned)")


def encoding_figures(e: Encoding) -> tuple[Image.Image, Image.Image]:
    # matplotlib's Figure without pyplot keeps no global state, so visitors can draw at the same time.
    n, d = e.matrix.shape
    values = Figure(figsize=(5.6, 4.4))
    _draw_values(values, values.subplots(), e, f"{_name(e)}: {n} positions × {d} dims")
    similarity = Figure(figsize=(5.2, 4.4))
    _draw_similarity(similarity, similarity.subplots(), e, f"{_name(e)}: cosine similarity")
    return figure_png(values), figure_png(similarity)


def comparison_figure(encodings: list[Encoding]) -> Image.Image:
    fig = Figure(figsize=(4.4 * len(encodings), 8.0))
    # Fixed spacing: a constrained layout would measure every label again and double the drawing time.
    axes = fig.subplots(2, len(encodings), squeeze=False, gridspec_kw={"wspace": 0.6, "hspace": 0.35})
    for column, e in enumerate(encodings):
        _draw_values(fig, axes[0, column], e, f"{_name(e)}: values")
        _draw_similarity(fig, axes[1, column], e, f"{_name(e)}: cosine similarity")
    return figure_png(fig)


ORDER_COLUMNS = [
    "token",
    "in A at",
    "partner in B, no positions",
    "difference, no positions",
    "partner in B, with positions",
    "difference, with positions",
]


def order_table(r: WordOrder) -> pd.DataFrame:
    columns = (
        r.tokens_a,
        range(len(r.tokens_a)),
        r.without_positions.partner,
        [f"{x:.1e}" for x in r.without_positions.difference],  # tiny numbers: 0.000000 would hide their size
        r.with_positions.partner,
        [round(x, 4) for x in r.with_positions.difference],
    )
    return pd.DataFrame(dict(zip(ORDER_COLUMNS, columns)))


def order_headline(r: WordOrder) -> str:
    return (
        f"**Without positions:** largest difference {r.without_positions.largest:.1e}, zero up to {r.dtype} rounding: "
        f"the same vectors, only permuted.  \n**With positions:** largest difference {r.with_positions.largest:.3f} "
        f"(the output values are about ±{r.typical:.2f}): the order changed what the model computed."
    )


def encoding_code(e: Encoding, dtype: torch.dtype) -> str:
    n, d = e.matrix.shape
    similarity = """unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
similarity = unit @ unit.T  # cosine similarity: positions x positions
"""
    if e.kind == "sinusoidal":
        return f"""import numpy as np

positions, dims = {n}, {d}
pos = np.arange(positions)[:, None]
two_i = np.arange(0, dims, 2)[None, :]
angle = pos / 10000 ** (two_i / dims)
matrix = np.zeros((positions, dims))
matrix[:, 0::2] = np.sin(angle)  # PE[pos, 2i]   = sin(pos / 10000^(2i/d))
matrix[:, 1::2] = np.cos(angle)  # PE[pos, 2i+1] = cos(pos / 10000^(2i/d))
{similarity}"""
    table = "model.wpe.weight" if e.kind == "gpt2" else "model.embeddings.position_embeddings.weight"
    return f"""import numpy as np
import torch
from transformers import AutoModel

model = AutoModel.from_pretrained({e.model!r}, dtype={dtype})
table = {table}  # one learned row per position
matrix = table[:{n}].detach().float().numpy().astype(np.float64)  # positions x dimensions
{similarity}"""


def order_code(r: WordOrder, text_a: str, text_b: str, dtype: torch.dtype) -> str:
    return f"""import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from transformers import AutoModel, AutoTokenizer

source = {r.model!r}
tokenizer = AutoTokenizer.from_pretrained(source)
model = AutoModel.from_pretrained(source, dtype={dtype}, attn_implementation="eager").eval()
E = model.embeddings


def outputs(ids, positions):  # BertEmbeddings.forward by hand, the position embeddings optional
    with torch.no_grad():
        h = E.word_embeddings(ids) + E.token_type_embeddings(torch.zeros_like(ids))
        if positions:
            h = h + E.position_embeddings(torch.arange(ids.shape[1]))[None]
        return model.encoder(E.LayerNorm(h)).last_hidden_state[0].float().numpy().astype(np.float64)


a = tokenizer({text_a!r}, return_tensors="pt").input_ids
b = tokenizer({text_b!r}, return_tensors="pt").input_ids
largest = {{}}
for positions in (False, True):
    out_a, out_b = outputs(a, positions), outputs(b, positions)
    worst = 0.0
    for token in set(a[0].tolist()):  # match each token with the same token in B, closest vectors first
        rows, columns = np.flatnonzero(a[0] == token), np.flatnonzero(b[0] == token)
        distances = np.linalg.norm(out_a[rows][:, None] - out_b[columns][None], axis=-1)
        for r, c in zip(*linear_sum_assignment(distances)):
            worst = max(worst, np.abs(out_a[rows[r]] - out_b[columns[c]]).max())
    largest["with positions" if positions else "without positions"] = float(worst)
print(largest)
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

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
