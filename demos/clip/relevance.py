"""Where each label matches: which patches of the image make CLIP pick a label (Chefer, Gur & Wolf 2021,
"Generic Attention-model Explainability", their recipe for CLIP).

For one label's logit, every attention map of the image encoder is weighed by the logit's gradient with respect to
it; the positive part, averaged over heads, is accumulated from the first layer to the last starting from the
identity (the residual stream): R = R + mean_h((grad * attention)+) @ R. The class token's row of R over the patches
says how much each patch contributed to that label. The loaded model is never changed: a private view of its image
encoder shares every weight tensor and asks its attention for the weights that open_clip does not ask for.
"""

import threading
import types
import weakref
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch
import torch.nn.functional as F
from gradio.data_classes import FileData
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from PIL import Image
from torch import nn

from demos.clip.zero_shot import (
    DEFAULT_TEMPLATE,
    DEMO_ID,
    MAX_LABELS_CHARS,
    ClipModel,
    label_weights,
    parse_labels,
    prompt_templates,
)
from hub.checks import check_text
from hub.errors import HubError
from hub.figures import figure_png
from hub.images import load_image, uploaded_file
from hub.models import ModelStore, weight_sharing_copy
from hub.ui import code_accordion, figure_image, load_model, show_errors

MAX_MAPS = 8  # the most probable labels drawn at once: each map costs one backward pass through the image encoder


# ---------------------------------------------------------------------------------------------------------
# The image encoder, seen from inside


def attention_with_weights(
    block: ResidualAttentionBlock,
    q_x: torch.Tensor,
    k_x: torch.Tensor | None = None,
    v_x: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """open_clip's ResidualAttentionBlock.attention, asking nn.MultiheadAttention for each head's weights, which it
    keeps in `block.attention_weights` (batch, heads, queries, keys) for the gradient."""
    k_x = k_x if k_x is not None else q_x
    v_x = v_x if v_x is not None else q_x
    attn_mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
    out, weights = block.attn(q_x, k_x, v_x, need_weights=True, average_attn_weights=False, attn_mask=attn_mask)
    block.attention_weights = weights
    return out


def check_encoder(visual: nn.Module) -> None:
    """Chefer's recipe reads a ViT whose class token is the image's summary, built from open_clip's own blocks."""
    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.pool_type != "tok":
        raise HubError(
            "Where each label matches reads open_clip Vision Transformers that summarise the image in a class token; "
            f"this model's image encoder is a {type(visual).__name__}."
        )
    if not all(type(block) is ResidualAttentionBlock for block in visual.transformer.resblocks):
        raise HubError("Where each label matches reads open_clip's standard attention blocks; this model has others.")


def relevance_view(visual: VisionTransformer) -> VisionTransformer:
    """A second module tree over the *same* weight tensors (hub.models.weight_sharing_copy), whose blocks
    return their attention weights. The loaded model keeps its fast attention, which returns none."""
    view = weight_sharing_copy(visual)
    for block in view.transformer.resblocks:
        block.attention = types.MethodType(attention_with_weights, block)  # this block only, not the class
    return view.eval()


@dataclass
class RelevanceView:
    encoder: VisionTransformer
    lock: threading.Lock  # the kept weights live on the view's blocks: one call at a time


_views: "weakref.WeakKeyDictionary[nn.Module, RelevanceView]" = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def shared_relevance_view(clip: ClipModel) -> RelevanceView:
    """The view of a loaded model's image encoder, made once per loaded model."""
    visual = clip.model.visual
    check_encoder(visual)
    with _views_lock:
        if visual not in _views:
            _views[visual] = RelevanceView(relevance_view(visual), threading.Lock())
        return _views[visual]


# ---------------------------------------------------------------------------------------------------------
# The work


def accumulate_relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s rule over the layers, first to last: per layer (heads x tokens x tokens) attention and the
    logit's gradient with respect to it; R starts as the identity, R = R + mean over heads of (grad * attention)+ @ R."""
    relevance = torch.eye(attentions[0].shape[-1], device=attentions[0].device)
    for attention, gradient in zip(attentions, gradients):
        contribution = (gradient.float() * attention.float()).clamp(min=0).mean(dim=0)
        relevance = relevance + contribution @ relevance
    return relevance


@dataclass
class LabelRelevance:
    labels: list[str]  # the labels drawn, most probable first (at most MAX_MAPS)
    probabilities: list[float]  # each drawn label's probability among all the labels given
    grid: tuple[int, int]  # patch rows, patch columns
    relevance: torch.Tensor  # labels x rows x cols: the class token's row of R over the patches
    pixels: torch.Tensor  # the model's input (3 x height x width) after preprocessing, as it was normalised
    templates: list[str]


def label_relevance(
    clip: ClipModel,
    image: Any,
    labels: Any,
    template: Any = DEFAULT_TEMPLATE,
    ensemble: bool = False,
    max_maps: int = MAX_MAPS,
) -> LabelRelevance:
    """For the most probable labels, the relevance of each image patch to the label's logit (the scaled cosine
    similarity /zero_shot turns into probabilities), from one forward pass and one backward pass per label."""
    labels = parse_labels(labels)
    templates = prompt_templates(template, ensemble)
    picture = load_image(image)
    weights = label_weights(clip, labels, templates)  # the very text embeddings /zero_shot uses (and caches)
    view = shared_relevance_view(clip)
    parameter = next(clip.model.parameters())
    pixels = clip.preprocess(picture).unsqueeze(0).to(parameter.device, parameter.dtype)
    blocks = view.encoder.transformer.resblocks
    with view.lock, torch.enable_grad():
        try:
            pixels.requires_grad_(True)  # a graph through the activations even where the weights are frozen
            features = F.normalize(view.encoder(pixels), dim=-1).float()
            logits = clip.model.logit_scale.exp().float() * features @ weights.to(features.device)
            # nn.MultiheadAttention hands back a reshaped copy of the softmax output it mixed the values with; the
            # gradient flows through that softmax output (the copy's base), not through the copy.
            attentions = [block.attention_weights for block in blocks]
            softmaxes = [a._base for a in attentions]
            if any(s is None or s.shape[-2:] != a.shape[-2:] for s, a in zip(softmaxes, attentions)):
                raise RuntimeError("nn.MultiheadAttention no longer returns a view of its softmax output")
            with torch.no_grad():
                bias = getattr(clip.model, "logit_bias", None)
                probabilities = logits.softmax(-1) if bias is None else (logits + bias.float()).sigmoid()
            order = probabilities[0].argsort(descending=True)[:max_maps].tolist()
            maps = []
            for n, index in enumerate(order):
                gradients = torch.autograd.grad(logits[0, index], softmaxes, retain_graph=n < len(order) - 1)
                relevance = accumulate_relevance(
                    [a[0].detach() for a in attentions], [g.view_as(a)[0] for g, a in zip(gradients, attentions)]
                )
                maps.append(relevance[0, 1:])
        finally:
            for block in blocks:
                vars(block).pop("attention_weights", None)  # the graph is not kept past the call
    rows, cols = view.encoder.grid_size
    return LabelRelevance(
        [labels[i] for i in order],
        [probabilities[0, i].item() for i in order],
        (rows, cols),
        torch.stack(maps).reshape(len(order), rows, cols).cpu(),
        pixels.detach()[0].float().cpu(),
        templates,
    )


def check_label(label: Any) -> str:
    """One label, by the rules labels follow everywhere (trimmed, inner spaces collapsed); commas separate labels."""
    labels = parse_labels(check_text(label, "Label", MAX_LABELS_CHARS))
    if len(labels) != 1:
        raise HubError(f"Label: one label at a time; commas and new lines separate labels, and this has {len(labels)}.")
    return labels[0]


def clip_relevance(
    clip: ClipModel, image: Any, label: Any, template: Any = DEFAULT_TEMPLATE, ensemble: Any = False
) -> dict:
    """/clip_relevance: {"grid": [rows, cols], "relevance": [rows * cols values, row-major]} for one label."""
    result = label_relevance(clip, image, [check_label(label)], template, ensemble)
    return {"grid": list(result.grid), "relevance": result.relevance[0].flatten().tolist()}


# ---------------------------------------------------------------------------------------------------------
# The figure and the code


def model_input_picture(clip: ClipModel, pixels: torch.Tensor) -> np.ndarray:
    """The preprocessed image as the model saw it (resized, cropped), with open_clip's normalisation undone."""
    for step in getattr(clip.preprocess, "transforms", []):
        if hasattr(step, "mean") and hasattr(step, "std"):
            mean, std = torch.tensor(step.mean).view(3, 1, 1), torch.tensor(step.std).view(3, 1, 1)
            pixels = pixels * std + mean
            break
    return pixels.clamp(0, 1).permute(1, 2, 0).numpy()


def relevance_figure(clip: ClipModel, result: LabelRelevance) -> Image.Image:
    """One panel per label: the model's input with each patch coloured by its share of the label's strongest patch."""
    picture = model_input_picture(clip, result.pixels)
    height, width = picture.shape[:2]
    rows, cols = result.grid
    columns = min(4, len(result.labels))
    lines = -(-len(result.labels) // columns)
    fig = Figure(figsize=(3.2 * columns + 0.8, 3.3 * lines))
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    shown = None
    for ax, label, probability, relevance in zip(axes, result.labels, result.probabilities, result.relevance):
        top = relevance.max().item()
        share = (relevance / top).numpy() if top > 0 else relevance.numpy()
        ax.imshow(picture, extent=(0, width, height, 0))
        shown = ax.imshow(
            share, cmap="inferno", alpha=0.6, vmin=0, vmax=1, extent=(0, width, height, 0), interpolation="nearest"
        )
        ax.set_title(f"{label}: {probability:.1%}", fontsize=9)
        step = -(-max(rows, cols) // 8)  # at most 8 tick labels per axis
        ax.set_xticks([(c + 0.5) * width / cols for c in range(0, cols, step)], range(1, cols + 1, step), fontsize=7)
        ax.set_yticks([(r + 0.5) * height / rows for r in range(0, rows, step)], range(1, rows + 1, step), fontsize=7)
        ax.set_xlabel("patch column", fontsize=8)
        ax.set_ylabel("patch row", fontsize=8)
    for ax in axes[len(result.labels) :]:
        ax.axis("off")
    bar = fig.colorbar(shown, ax=list(axes), fraction=0.03, pad=0.02)
    bar.set_label("relevance, % of the label's most relevant patch", fontsize=8)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return figure_png(fig)


def relevance_code(clip: ClipModel, result: LabelRelevance, dtype: torch.dtype) -> str:
    rows, cols = result.grid
    return f"""import functools

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

model, _, preprocess = open_clip.create_model_and_transforms({clip.model_name!r}, pretrained={clip.pretrained!r})
model = model.eval().to({dtype})
tokenizer = open_clip.get_tokenizer({clip.model_name!r})
labels = {result.labels!r}
weights = open_clip.build_zero_shot_classifier(model, tokenizer, labels, templates={result.templates!r}).float()
image = preprocess(Image.open("photo.jpg").convert("RGB")).unsqueeze(0).to({dtype}).requires_grad_(True)

# open_clip's blocks ask nn.MultiheadAttention for no weights: ask for each head's, and keep them
kept = []
def attention(block, q_x, k_x=None, v_x=None, attn_mask=None):
    out, weights = block.attn(q_x, q_x, q_x, need_weights=True, average_attn_weights=False, attn_mask=attn_mask)
    kept.append(weights)  # (batch, heads, tokens, tokens); weights._base is the softmax the values were mixed with
    return out
for block in model.visual.transformer.resblocks:
    block.attention = functools.partial(attention, block)  # this block's attention, now with weights

features = F.normalize(model.visual(image), dim=-1).float()
logits = model.logit_scale.exp().float() * features @ weights  # the label's logit: its scaled cosine similarity
relevance = {{}}
for i, label in enumerate(labels):
    grads = torch.autograd.grad(logits[0, i], [w._base for w in kept], retain_graph=True)
    R = torch.eye(kept[0].shape[-1])  # tokens x tokens: the class token, then the patches
    for attention_weights, grad in zip(kept, grads):  # first layer to last; mean over heads of the positive part
        R = R + (grad.view_as(attention_weights) * attention_weights).float()[0].clamp(min=0).mean(dim=0) @ R
    relevance[label] = R[0, 1:].reshape({rows}, {cols})  # the class token's row over the patches
    print(label, relevance[label])
"""


# ---------------------------------------------------------------------------------------------------------
# The section in the zero-shot tab


def relevance_section(store: ModelStore, image: gr.Image, labels: gr.Textbox, template: gr.Textbox, ensemble) -> None:
    """An accordion under the zero-shot tab: where each label matches the tab's image, and /clip_relevance."""
    with gr.Accordion("Where each label matches", open=False):
        gr.Markdown(
            "Which patches of the image made CLIP pick each label. For a label's score, every attention map of the "
            "image encoder is weighed by how much the score would change with it (its gradient); what raises the "
            "score is added up from the first layer to the last (Chefer et al. 2021). The image is the model's "
            f"input after resizing and cropping, cut in patches; bright patches mattered most. The {MAX_MAPS} most "
            "probable labels are drawn, each scaled to its own most relevant patch."
        )
        show = gr.Button("Show where each label matches")
        figure = figure_image(
            label="Relevance of each patch to each label", show_label=False, elem_id="clip-relevance-figure"
        )
        code = code_accordion()

    @show_errors
    def run(image: Any, labels: str, template: str, ensemble: bool, progress=gr.Progress()):
        clip = load_model(store, DEMO_ID, progress)
        result = label_relevance(clip, image, labels, template, ensemble)
        return relevance_figure(clip, result), relevance_code(clip, result, store.dtype)

    show.click(run, [image, labels, template, ensemble], [figure, code], api_visibility="private", preprocess=False)

    def clip_relevance_api(
        image: FileData, label: str, template: str = DEFAULT_TEMPLATE, ensemble: bool = False
    ) -> dict:
        """Which patches of an image make CLIP match one label (Chefer et al. 2021: attention weighed by its gradient).

        Args:
            image: The image, a file (PNG, JPEG, ...) sent with the request.
            label: One label, e.g. "a dog" (no commas: commas separate labels).
            template: The prompt the label is put in, with {} where the label goes. Default "a photo of a {}.".
            ensemble: true = average the label's embedding over the seven ImageNet prompts as well. Default false.

        Returns:
            {"grid": [patch rows, patch columns], "relevance": one number per patch, row by row, 0 or more: how much the patch raised the label's score, to compare between patches (larger = mattered more)}.
        """
        return clip_relevance(store.get(DEMO_ID), uploaded_file(image), label, template, ensemble)

    gr.api(show_errors(clip_relevance_api), api_name="clip_relevance")
