"""What training changed in the attention: for a probe text, every head's attention in the pretrained backbone
(before) and in the visitor's fine-tuned model (after), and how much each head moved.

    before  the backbone's own weights, loaded once per folder with eager attention (sdpa returns no weights)
    after   the fine-tuned model's encoder through hub.inside.attention_view: the same weight tensors, eager
    change  per layer x head: 100 x the mean over query x key of |after - before|, in percentage points

The section sits at the bottom of the fine-tune tab; /fine_tune_attention returns the same numbers as JSON.
"""

import threading
import weakref
from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, PreTrainedModel

from demos.fine_tune.data import DEFAULT_PROBES
from demos.fine_tune.model import resolve_backbone
from hub.checks import check_int, check_text
from hub.errors import HubError
from hub.figures import heatmap
from hub.inside import BASE_SHAPE, MAX_CHARS, MAX_TOKENS, attention_view, configured_layers_and_heads
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, load_model, show_errors
from hub.visitors import VisitorStore, session_id

EXAMPLE = DEFAULT_PROBES[0]
MOST_CHANGED = 5  # heads named in the summary

# ---------------------------------------------------------------------------------------------------------
# The two models: the pretrained backbone and the fine-tuned encoder, both with eager attention

_pretrained: dict[tuple[str, str], PreTrainedModel] = {}
_pretrained_lock = threading.Lock()


def pretrained_encoder(folder: str, device: torch.device | str = "cpu") -> PreTrainedModel:
    """The backbone as it was before any training, with eager attention: loaded once per folder (and device)
    and shared by every visitor; nothing ever trains it."""
    key = (str(folder), str(device))
    with _pretrained_lock:  # two first requests load it once
        if key not in _pretrained:
            model = AutoModel.from_pretrained(
                folder, attn_implementation="eager", use_safetensors=True, dtype=torch.float32
            )
            _pretrained[key] = model.to(device).eval()
        return _pretrained[key]


# One view per fine-tuned model, forgotten with the model (a visitor's model is dropped after a while).
_views: "weakref.WeakKeyDictionary[PreTrainedModel, PreTrainedModel]" = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def fine_tuned_encoder(model: PreTrainedModel) -> PreTrainedModel:
    """The fine-tuned classifier's encoder (its `base_model`, without the new head), seen with eager attention
    over the very same weight tensors: the visitor's model keeps its fast attention for /fine_tune_predict."""
    with _views_lock:
        if model not in _views:
            _views[model] = attention_view(model.base_model)
        return _views[model]


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class AttentionChange:
    """Every attention weight of one probe text, before and after training: [layer - 1, head - 1, query, key]."""

    tokens: list[str]
    before: np.ndarray  # (layers, heads, n, n) float32, the pretrained backbone; each row sums to 1
    after: np.ndarray  # the same, the fine-tuned model's encoder
    change: np.ndarray  # (layers, heads): 100 x mean |after - before|, percentage points
    text: str  # as the model read it (surrounding whitespace removed)
    max_length: int  # the fine-tuned model's max sequence length: longer texts are cut there
    cut: bool = False  # whether this text was


def attention_weights(model: PreTrainedModel, input_ids: torch.Tensor) -> np.ndarray:
    """All the model's attention weights for one text, shape (layers, heads, n, n)."""
    with torch.inference_mode():
        attentions = model(input_ids=input_ids.to(model.device), output_attentions=True).attentions
    return torch.stack([a[0] for a in attentions]).float().cpu().numpy()


def attention_difference(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per layer x head: the mean over query x key of |after - before|, in percentage points."""
    return 100 * np.abs(after.astype(np.float64) - before.astype(np.float64)).mean(axis=(-2, -1))


def probe_ids(tokenizer, text: str, max_length: int) -> tuple[torch.Tensor, bool]:
    """The probe text as the fine-tuned model reads it (cut to its max sequence length), and whether it was cut."""
    # One token more than the model reads tells whether the text was cut.
    ids = tokenizer(text, truncation=True, max_length=max_length + 1, return_tensors="pt").input_ids
    cut = ids.shape[1] > max_length
    if cut:
        ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt").input_ids
    if ids.shape[1] > MAX_TOKENS:
        raise HubError(
            f"Text is {ids.shape[1]} tokens long as the fine-tuned model reads it; this view reads at most "
            f"{MAX_TOKENS}. Shorten it."
        )
    return ids, cut


def attention_change(backbone_folder: str, fine_tuned, text: object) -> AttentionChange:
    """Before (the pretrained backbone in `backbone_folder`) and after (`fine_tuned.model`'s encoder) for a text
    tokenised with the fine-tuned model's tokenizer and max length."""
    text = check_text(text, "Text", MAX_CHARS)
    ids, cut = probe_ids(fine_tuned.tokenizer, text, fine_tuned.max_length)
    model = fine_tuned.model
    before = attention_weights(pretrained_encoder(backbone_folder, model.device), ids)
    after = attention_weights(fine_tuned_encoder(model), ids)
    if before.shape != after.shape:
        raise HubError(
            f"The fine-tuned model ({after.shape[0]} layers x {after.shape[1]} heads) was not trained from the "
            f"loaded backbone ({before.shape[0]} x {before.shape[1]}): train again."
        )
    tokens = fine_tuned.tokenizer.convert_ids_to_tokens(ids[0])
    change = attention_difference(before, after)
    return AttentionChange(tokens, before, after, change, text, fine_tuned.max_length, cut)


def most_changed(change: np.ndarray, k: int = MOST_CHANGED) -> list[tuple[int, int, float]]:
    """The k heads that changed most, as (layer, head, percentage points), counted from 1, largest first."""
    order = np.argsort(-change, axis=None, kind="stable")[:k]
    return [(int(i // change.shape[1]) + 1, int(i % change.shape[1]) + 1, float(change.flat[i])) for i in order]


def as_json(result: AttentionChange) -> dict:
    """The API's answer: change[layer][head] in percentage points; before/after[layer][head][query][key] in 0-1."""
    return {
        "tokens": result.tokens,
        "change": result.change.tolist(),
        "before": result.before.tolist(),
        "after": result.after.tolist(),
    }


def summary_text(result: AttentionChange) -> str:
    layers, heads = result.change.shape
    cut = f" The text was cut to the {result.max_length} tokens the model reads." if result.cut else ""
    if not result.change.any():
        return (
            f"**Nothing changed** in any of the {layers} x {heads} heads: this model's backbone was frozen (only the "
            f"new classification head was trained), so its attention is the pretrained one.{cut}"
        )
    top = ", ".join(
        f"layer {layer} head {head} ({points(change)} pp)" for layer, head, change in most_changed(result.change)
    )
    return (
        f"{len(result.tokens)} tokens, {layers} layers x {heads} heads. Changed most: {top}. Mean over all heads: "
        f"{points(result.change.mean())} percentage points (pp).{cut}"
    )


def points(value: float) -> str:
    """Two decimals, or two significant digits for a change below 0.01 pp (so it does not read as none)."""
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


# --- figures ---------------------------------------------------------------------------------------------


def change_figure(result: AttentionChange) -> Image.Image:
    layers, heads = result.change.shape
    return heatmap(
        result.change,
        [str(layer) for layer in range(1, layers + 1)],
        [str(head) for head in range(1, heads + 1)],
        row_title="layer (1 = nearest the input)",
        column_title="head",
        title="How much each head's attention changed: mean |after − before|, percentage points",
        percent=False,
        cmap="Oranges",
        vmax=float(result.change.max()) or 0.01,  # a frozen backbone's all-zero table still gets a scale
    )


def head_figures(result: AttentionChange, layer: int, head: int) -> tuple[Image.Image, Image.Image, Image.Image]:
    """One head before, after (same 0-100% scale) and after − before (red = more attention after training)."""
    before, after = result.before[layer - 1, head - 1], result.after[layer - 1, head - 1]
    axes = dict(row_title="query ↓ (the token that looks)", column_title="attends to key →")
    where = f"layer {layer}, head {head}"
    largest = float(np.abs(after - before).max()) or 0.01  # a head that did not change still gets a scale
    return (
        heatmap(before, result.tokens, result.tokens, title=f"Before training: {where}", vmax=1.0, **axes),
        heatmap(after, result.tokens, result.tokens, title=f"After training: {where}", vmax=1.0, **axes),
        heatmap(
            after - before,
            result.tokens,
            result.tokens,
            title=f"After − before: {where} (percentage points)",
            cmap="RdBu_r",
            vmin=-largest,
            vmax=largest,
            **axes,
        ),
    )


def change_code(backbone: str, text: str, max_length: int) -> str:
    return f"""import torch
from transformers import AutoModel, AutoTokenizer

backbone = {backbone!r}  # the pretrained model training started from
fine_tuned = "fine-tuned-model"  # your model: the unzipped download above (or the training code's "my-model")
tokenizer = AutoTokenizer.from_pretrained(fine_tuned)
inputs = tokenizer({text!r}, truncation=True, max_length={max_length}, return_tensors="pt")


def attentions(folder):
    # AutoModel reads the encoder alone (no classification head); eager attention returns its weights.
    model = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        return torch.stack(model(**inputs, output_attentions=True).attentions)[:, 0]  # (layers, heads, n, n)


before, after = attentions(backbone), attentions(fine_tuned)
change = 100 * (after - before).abs().mean(dim=(-2, -1))  # (layers, heads), percentage points
print(change.round(decimals=2))  # row = layer, column = head, both from 1 in the figure
"""


# ---------------------------------------------------------------------------------------------------------
# The section in the fine-tune tab

INTRO = """
**What you are looking at:** the attention of every head for your probe text, in the pretrained backbone
(*before*) and in your fine-tuned model (*after*). The table shows how far each head's weights moved (the mean,
over every query and key token, of |after − before|, in percentage points); the maps below compare one head.
"""

DIFFERENCE_NOTE = """
**After − before**, cell by cell: red where the fine-tuned model gives that key token *more* attention than the
pretrained backbone did, blue where less. Each row of the two maps above sums to 100%, so each row here sums to 0:
training moved attention from some tokens to others.
"""


def attention_change_section(store: ModelStore, demo_id: str, sessions: VisitorStore) -> None:
    """The accordion and the /fine_tune_attention endpoint; `sessions` holds each visitor's FineTuned model."""
    with gr.Accordion("What training changed in the attention", open=False, elem_id="fine-tune-attention"):
        gr.Markdown(INTRO)
        with gr.Row():
            text = gr.Textbox(EXAMPLE, label=f"Probe text (at most {MAX_TOKENS} tokens)", scale=3)
            compare = gr.Button("Compare before and after training", variant="primary", scale=1)
        summary = gr.Markdown(elem_id="fine-tune-attention-summary")
        # The figures carry their own titles: Gradio's label badge would cover them.
        change_map = figure_image(
            label="Change per layer × head", show_label=False, elem_id="fine-tune-attention-change"
        )
        with gr.Row():
            first = "Starts at the head that changed most"
            # the backbone's own shape before a run (the tiny preset's has 2 layers, MiniLM 6), from its config
            layers, heads = configured_layers_and_heads(store, demo_id, resolve_backbone) or BASE_SHAPE
            layer = gr.Slider(
                1, layers, value=1, step=1, label="Layer", info=first, elem_id="fine-tune-attention-layer"
            )
            head = gr.Slider(1, heads, value=1, step=1, label="Head", info=first, elem_id="fine-tune-attention-head")
        with gr.Row():
            before_map = figure_image(label="Before training", show_label=False, elem_id="fine-tune-before")
            after_map = figure_image(label="After training", show_label=False, elem_id="fine-tune-after")
        with gr.Row():
            difference_map = figure_image(label="After − before", show_label=False, elem_id="fine-tune-difference")
            gr.Markdown(DIFFERENCE_NOTE)
        code = code_accordion()
    result_state = gr.State()

    def visitor_change(text: object, request: gr.Request | None, progress=None) -> AttentionChange:
        text = check_text(text, "Text", MAX_CHARS)  # a caller without a session still learns what is wrong with it
        fine_tuned = sessions.get(session_id(request))  # "train a model first" before any training
        backbone = load_model(store, demo_id, progress)
        return attention_change(backbone.folder, fine_tuned, text)

    @show_errors
    def show(text: str, request: gr.Request, progress=gr.Progress()):
        result = visitor_change(text, request, progress)
        layers, heads = result.change.shape
        layer, head, _ = most_changed(result.change, 1)[0]
        return (
            result,
            summary_text(result),
            change_figure(result),
            gr.Slider(maximum=layers, value=layer),
            gr.Slider(maximum=heads, value=head),
            *head_figures(result, layer, head),
            change_code(store.source(demo_id), result.text, result.max_length),
        )

    @show_errors
    def redraw(result: AttentionChange | None, layer: float, head: float):
        if result is None:
            return None, None, None
        layers, heads = result.change.shape
        return head_figures(result, check_int(layer, "Layer", 1, layers), check_int(head, "Head", 1, heads))

    gr.on(
        [compare.click, text.submit],
        show,
        text,
        [result_state, summary, change_map, layer, head, before_map, after_map, difference_map, code],
        api_visibility="private",
    )
    gr.on(
        [layer.release, head.release],
        redraw,
        [result_state, layer, head],
        [before_map, after_map, difference_map],
        api_visibility="private",
    )

    def fine_tune_attention(text: str = EXAMPLE, request: gr.Request = None) -> dict:
        """How fine-tuning changed every attention head: this session's fine-tuned model against the pretrained backbone, for one text (call /fine_tune first, with the same client).

        Args:
            text: The text to read, at most 64 tokens (cut to the max_length the model was trained with); read exactly as given. Default the first probe text.

        Returns:
            {"tokens": the model's tokens, "change": change[layer][head] = the mean over query and key tokens of |after - before| in percentage points, "before" and "after": attention[layer][head][query][key] as fractions from 0 to 1, each query row summing to 1}; layers and heads in model order (the figures count them from 1).
        """
        return as_json(visitor_change(text, request))

    gr.api(show_errors(fine_tune_attention), api_name="fine_tune_attention", concurrency_limit=2)
