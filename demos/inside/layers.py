"""Layer by layer: how data flows from tokens to a prediction, and what the model would say after each layer."""

from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.ticker import PercentFormatter
from PIL import Image
from torch import nn

from demos.attention.maps import USES
from hub.demo import Demo
from hub.errors import HubError
from hub.figures import figure_png
from hub.inside import DECODER, Transformer, load_transformer, tokenize
from hub.links import link_inputs
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

DEMO_ID = "layers"
DEFAULT_TEXT = "The Eiffel Tower is in the city of"
LENS_CELL_TEXT_MAX_COLUMNS = 32  # wider than this, a cell is too narrow for a word: colours only (the table has all)

# ---------------------------------------------------------------------------------------------------------
# The model, drawn from its own config and modules


@dataclass
class Part:
    name: str
    sizes: str
    parameters: int  # counted on the real modules; a tensor shared with an earlier part is not counted again
    note: str = ""


def _count(modules: list[nn.Module], seen: set[int]) -> int:
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def mlp_width(t: Transformer) -> int:
    config = t.model.config
    return (config.n_inner or 4 * t.width) if t.is_gpt2 else config.intermediate_size


def model_parts(t: Transformer) -> list[Part]:
    """The parts data flows through, in order, with their real sizes and parameter counts. The counts add up to
    the model's total: tied weights (GPT-2's head is its token embedding table) are counted once, where first used."""
    config, body, d, seen = t.model.config, t.body, t.width, set()
    vocab, positions = config.vocab_size, t.position_table.shape[0]
    if t.is_gpt2:
        embeddings = [body.wte, body.wpe]
        embedding_sizes = f"tokens {vocab:,} × {d} + positions {positions:,} × {d}"
    else:
        embeddings = [body.embeddings]
        embedding_sizes = (
            f"tokens {vocab:,} × {d} + positions {positions:,} × {d} + segments {config.type_vocab_size} × {d}, "
            "then LayerNorm"
        )
    parts = [Part("embeddings", embedding_sizes, _count(embeddings, seen), f"{d} numbers per token")]
    per_block = _count([t.blocks[0]], set())
    norm_place = "before" if t.is_gpt2 else "after"
    parts.append(
        Part(
            f"{t.layers} blocks",
            f"attention: {t.heads} heads × {t.head_size} (= {d}); MLP {d} → {mlp_width(t):,} → {d}",
            _count(list(t.blocks), seen),
            f"{per_block:,} per block; LayerNorm {norm_place} attention and MLP",
        )
    )
    if t.is_gpt2:
        parts.append(
            Part("final norm (ln_f)", f"LayerNorm over {d}", _count([body.ln_f], seen), "after the last block")
        )
    else:
        parts.append(Part("final norm", "none", 0, "BERT has no norm after the stack: each block ends with LayerNorm"))
    head = t.word_head()
    if head is None:
        parts.append(Part("word head", "none", 0, f"{t.name} has no masked-word head (it makes sentence vectors)"))
    else:
        tied = t.model.get_output_embeddings().weight is t.model.get_input_embeddings().weight
        tie = f"its {vocab:,} × {d} weights are the token embeddings (tied, counted once)" if tied else ""
        if t.is_gpt2:
            parts.append(Part("LM head", f"{d} → {vocab:,}", _count([head], seen), tie))
        else:
            extra = "dense + GELU + LayerNorm, then "
            parts.append(Part("MLM head", f"{extra}{d} → {vocab:,}", _count([head], seen), tie + "; its own bias"))
    rest = _count([t.model], seen)  # what the flow does not use, e.g. MiniLM's pooler
    if rest:
        parts.append(Part("other (unused here)", "pooler", rest, "the [CLS] pooler, not on the path to words"))
    return parts


def total_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def short_name(t: Transformer) -> str:
    """A Hub id as it is; a long local folder as its last two parts, so it fits in a figure."""
    return "/".join(t.name.rstrip("/").split("/")[-2:])


def short(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"


PARTS_COLUMNS = ["part", "parameters", "sizes", "note"]


def parts_table(t: Transformer) -> pd.DataFrame:
    parts = model_parts(t)
    rows = [[p.name, p.parameters, p.sizes, p.note] for p in parts]
    rows.append(["total", sum(p.parameters for p in parts), "", ""])
    return pd.DataFrame(rows, columns=PARTS_COLUMNS)


def _box(ax, x: float, y: float, w: float, h: float, text: str, colour: str, size: float = 8.5) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=colour, ec="#444"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, wrap=True)


def _arrow(ax, x: float, y0: float, y1: float) -> None:
    ax.annotate("", (x, y1), (x, y0), arrowprops={"arrowstyle": "-|>", "color": "#444", "lw": 1.2})


def diagram(t: Transformer) -> Image.Image:
    """Boxes and arrows from the tokens to the probabilities, with the loaded model's own numbers."""
    embeddings, blocks, final, head = model_parts(t)[:4]  # always these four first, in this order
    d, vocab, positions = t.width, t.model.config.vocab_size, t.position_table.shape[0]
    fig = Figure(figsize=(6.2, 7.8))  # small enough that the page shows its text at a readable size
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.7, 11)
    ax.axis("off")
    # Short and centred: in the page the image's label covers the top left corner and its buttons the top right.
    flow = "tokens in, probabilities out" if t.word_head() else "tokens in, vectors out"
    ax.text(5, 10.65, flow, ha="center", fontsize=9, style="italic", color="#555")
    _box(ax, 2.5, 9.5, 5, 0.7, "text → tokenizer → n token ids", "#f2f2f2")
    _arrow(ax, 5, 9.5, 9.1)
    segments = "" if t.is_gpt2 else f"\n+ segments {t.model.config.type_vocab_size} × {d}, LayerNorm"
    _box(ax, 0.3, 7.9, 4.3, 1.2, f"token embeddings\n{vocab:,} words × d = {d}", "#dbe9f6")
    _box(ax, 5.4, 7.9, 4.3, 1.2, f"position embeddings\n{positions:,} positions × {d}{segments}", "#dbe9f6")
    ax.text(5, 8.5, "+", ha="center", va="center", fontsize=16, weight="bold")
    ax.text(5.15, 7.55, f"{short(embeddings.parameters)} parameters", fontsize=7.5, color="#555")
    _arrow(ax, 5, 7.9, 7.3)
    ax.add_patch(Rectangle((0.2, 3.85), 9.6, 3.45, fc="#fff7e6", ec="#c98a00", lw=1.5, ls="--"))
    ax.text(0.4, 6.95, f"× {t.layers} blocks", fontsize=10, weight="bold", color="#a06a00")
    each = f"{short(blocks.parameters // t.layers)} parameters each, {short(blocks.parameters)} in all"
    ax.text(9.6, 6.95, each, ha="right", fontsize=7.5, color="#555")
    norm = "LayerNorm, then " if t.is_gpt2 else ""
    after = "" if t.is_gpt2 else ", then LayerNorm"
    mask = "each token sees earlier tokens only" if t.is_gpt2 else "each token sees every token"
    _box(
        ax, 0.8, 5.35, 8.4, 1.25, f"{norm}attention: {t.heads} heads of size {t.head_size}\n({mask}){after}", "#fde2c8"
    )
    _box(ax, 0.8, 4.25, 8.4, 0.85, f"{norm}MLP: {d} → {mlp_width(t):,} → {d}{after}", "#fde2c8")
    residual = "each part adds its result to the token's vector (the residual stream)"
    ax.text(5, 3.95, residual, ha="center", va="bottom", fontsize=7.5, color="#a06a00")
    _arrow(ax, 5, 3.85, 3.3)
    if t.is_gpt2:
        _box(ax, 1.5, 2.6, 7, 0.7, f"final LayerNorm (ln_f): {final.parameters:,} parameters", "#e3f1e0")
    else:
        _box(ax, 0.8, 2.6, 8.4, 0.7, "no final norm: every block already ends with LayerNorm", "#eeeeee", 8)
    _arrow(ax, 5, 2.6, 2.1)
    if t.word_head() is None:
        text = "no word head: this encoder makes\nsentence vectors, not words"
    else:
        what = "next-token" if t.is_gpt2 else "masked-word"
        text = f"{what} head: {head.sizes}\n{short(head.parameters)} new parameters"
        text += " (weights tied to the token embeddings)" if "tied" in head.note else ""
    _box(ax, 0.5, 1.0, 9, 1.1, text, "#e3f1e0", 8)
    _arrow(ax, 5, 1.0, 0.6)
    out = f"a probability for each of {vocab:,} tokens" if t.word_head() else f"a vector of width {d}"
    ax.text(5, 0.3, f"{out}, at every position", ha="center", fontsize=8.5)
    name = short_name(t)
    kind = "decoder" if t.is_gpt2 else "encoder"
    total = f"{name} ({kind}): {short(total_parameters(t.model))} parameters in all"
    ax.text(5, -0.4, total, ha="center", fontsize=9, weight="bold")
    return figure_png(fig)


_diagrams: dict[tuple[int, str], Image.Image] = {}


def cached_diagram(t: Transformer) -> Image.Image:
    """A loaded model never changes while the server runs: draw each one once."""
    key = (id(t.model), t.name)
    if key not in _diagrams:
        _diagrams[key] = diagram(t)
    return _diagrams[key]


# ---------------------------------------------------------------------------------------------------------
# The work: the logit lens


def no_word_head_message(t: Transformer) -> str:
    because = f"{t.notice} " if t.notice else ""
    return (
        f"{because}{t.name} has no masked-word head, so it cannot say which word it would predict after each "
        "layer; pick the decoder (GPT-2) or BERT. The tab's diagram still shows how it is built."
    )


def layer_predictions(t: Transformer, text: str) -> dict:
    """The logit lens: the model's own output head applied to the hidden state after each layer, at every
    position. Row 0 = the embeddings, row L = after block L; the last row is the model's own prediction."""
    head = t.word_head()
    if head is None:
        raise HubError(no_word_head_message(t))
    tokens = tokenize(t, text)
    rows = []
    with torch.inference_mode():
        # The body without its head: the loop below applies the head to every layer, the last one included.
        hidden_states = t.body(input_ids=tokens.ids, output_hidden_states=True).hidden_states
        for layer, hidden in enumerate(hidden_states):
            if t.is_gpt2 and layer < len(hidden_states) - 1:  # GPT-2's last entry already went through ln_f
                hidden = t.body.ln_f(hidden)
            # One layer at a time: 64 positions × 50k words is 13 MB in float32; all layers at once would be 13×.
            probs, ids = head(hidden)[0].float().softmax(-1).max(-1)  # float: the store may run bf16
            words = t.tokenizer.convert_ids_to_tokens(ids.tolist())
            rows.append([{"token": w, "prob": p} for w, p in zip(words, probs.tolist())])
    mask_id = t.tokenizer.mask_token_id if t.kind != DECODER else None  # GPT-2 has no mask
    masks = [i for i, token_id in enumerate(tokens.ids[0].tolist()) if mask_id is not None and token_id == mask_id]
    return {
        "tokens": tokens.tokens,
        "layers": rows,
        "model": t.name,
        "kind": t.kind,
        "masks": masks,  # positions (from 0) of the mask tokens, where BERT's prediction is the point
        "notice": t.notice,
    }


def layer_names(result: dict) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(1, len(result["layers"]))]


def readable(t: Transformer, token: str, limit: int = 8) -> str:
    """A token as a person reads it: GPT-2's Ġ as a space, whitespace made visible, long words cut."""
    text = t.tokenizer.convert_tokens_to_string([token])
    shown = text.strip() or text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in shown)  # control bytes have no glyph
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def lens_table(t: Transformer, result: dict) -> pd.DataFrame:
    columns = [f"{i + 1} {readable(t, token, 14)}" for i, token in enumerate(result["tokens"])]
    rows = []
    for name, cells in zip(layer_names(result), result["layers"]):
        shown = [f"{readable(t, c['token'], 14)} · {100 * c['prob']:.1f}%" for c in cells]
        rows.append({"layer": name} | dict(zip(columns, shown)))
    return pd.DataFrame(rows)


def percent(p: float) -> str:
    """Short enough for a cell, and never "0%" for a probability that is small but not zero."""
    return f"{100 * p:.0f}%" if p >= 0.01 else f"{100 * p:.1f}%" if p >= 0.0005 else "<0.1%"


def lens_figure(t: Transformer, result: dict) -> Image.Image:
    """Rows = layers (embeddings on top), columns = positions; colour = the top token's probability, each cell
    written with that token. Bold = the token really there (BERT) or really next in the text (GPT-2)."""
    tokens, layers, masks = result["tokens"], result["layers"], set(result["masks"])
    probs = np.array([[c["prob"] for c in row] for row in layers])
    n_rows, n_columns = probs.shape
    annotate = n_columns <= LENS_CELL_TEXT_MAX_COLUMNS
    width = (0.7 if annotate else 0.2) * n_columns + 2.6  # at most about 25 inches (64 tokens)
    fig = Figure(figsize=(max(5.0, width), max(3.0, 0.5 * n_rows + 1.8)))
    ax = fig.add_subplot()
    image = ax.imshow(probs, cmap="Blues", norm=Normalize(0, 1), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_columns), [readable(t, token) for token in tokens], rotation=60, ha="left", fontsize=8)
    ax.set_yticks(range(n_rows), layer_names(result), fontsize=8)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("position →  (the text's tokens)")
    ax.set_ylabel("layer ↓")
    for j in masks:
        ax.get_xticklabels()[j].set_color("#d35400")
        ax.add_patch(Rectangle((j - 0.5, -0.5), 1, n_rows, fill=False, ec="#d35400", lw=2))
    what = "the next token" if t.kind == DECODER else "the token at each position"
    bold = "bold = the text's real next token" if t.kind == DECODER else "bold = the token really there"
    ax.set_title(f"What {short_name(t)} would predict ({what}) if it stopped after each layer", pad=12)
    legend = f"cell = top token and its probability; {bold}; the last row is the model's own output"
    fig.text(0.01, 0.005, legend, fontsize=7.5, color="#555")
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("probability of the top token", fontsize=8)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if annotate:
        for i, row in enumerate(layers):
            for j, cell in enumerate(row):
                real = tokens[j] if t.kind != DECODER else tokens[j + 1] if j + 1 < n_columns else None
                colour = "white" if cell["prob"] > 0.6 else "black"
                label = f"{readable(t, cell['token'])}\n{percent(cell['prob'])}"
                weight = "bold" if cell["token"] == real and j not in masks else "normal"
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color=colour, weight=weight)
    return figure_png(fig)


def lens_code(t: Transformer, text: str, dtype: torch.dtype) -> str:
    """transformers code that prints the same numbers as the figure, from the same weights."""
    auto = "AutoModelForCausalLM" if t.is_gpt2 else "AutoModelForMaskedLM"
    if t.is_gpt2:
        head = """        if layer < len(hidden_states) - 1:  # the last entry already went through the final norm
            h = model.transformer.ln_f(h)
        probs = model.lm_head(h)[0].float().softmax(-1)  # the next-token head, at every position"""
    else:
        head = "        probs = model.cls(h)[0].float().softmax(-1)  # the masked-word head, at every position"
    return f"""import torch
from transformers import {auto}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
model = {auto}.from_pretrained({t.name!r}, dtype={dtype}).eval()
inputs = tokenizer({text!r}, return_tensors="pt")
with torch.no_grad():
    hidden_states = model(**inputs, output_hidden_states=True).hidden_states  # embeddings, then one per block
    for layer, h in enumerate(hidden_states):
{head}
        top = probs.max(-1)
        words = tokenizer.convert_ids_to_tokens(top.indices.tolist())
        percent = [round(100 * p, 3) for p in top.values.tolist()]  # the top token's probability, in percent
        print("embeddings" if layer == 0 else f"layer {{layer}}", list(zip(words, percent)))
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

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
