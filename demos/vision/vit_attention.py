"""Where the Vision Transformer looks: attention rollout over the visitor's photo, any layer and head's attention
from the class token (or a clicked patch) over the patches, and the 2-D layout the learned position embeddings hold.

Every number comes from the classifier the image-classification tab loaded, read through a view that shares its
weights and computes attention the plain way (softmax included), so the tab's own /classify_image stays fused and fast.
"""

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from timm.models import VisionTransformer

from demos.vision.image_classification import as_image, configured_layers_and_heads
from hub.checks import check_int
from hub.errors import HubError
from hub.figures import figure_png, heatmap
from hub.images import load_image, uploaded_file
from hub.models import ModelStore, weight_sharing_copy
from hub.ui import code_accordion, figure_image, load_model, show_errors

DEMO_ID = "image-classification"  # the tab whose classifier these views read
VIEW_SIZE = 448  # the model's input is drawn about this large, so patches are big enough to click


# ---------------------------------------------------------------------------------------------------------
# The model, seen from inside


class AttentionReader:
    """A second module tree over the loaded ViT's *same* weight tensors, with fused attention off, that returns
    every attention probability of a forward pass.

    timm's fused kernel (scaled_dot_product_attention) never forms the softmax, so nothing could read it; switching
    the shared model to the plain path would slow /classify_image. The view's blocks take the plain path, where the
    softmax output passes through `attn.attn_drop` (identity in eval), and a hook there keeps it.

    Concurrency: the hooks write into a list that belongs to the calling thread (Gradio runs each request in its
    own worker thread, and a forward pass runs its hooks in the thread that called it), so two requests on the one
    view never see each other's maps and need no lock. timm.utils.AttentionExtract keeps its captures in one dict
    per device instead, which two requests at once would overwrite: the Code accordion uses it, the server does not.
    """

    def __init__(self, model: torch.nn.Module):
        check_supported(model)
        self.model = weight_sharing_copy(model).eval()
        self._captured = threading.local()
        for block in self.model.blocks:
            block.attn.fused_attn = False
            block.attn.attn_drop.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: Any, probabilities: torch.Tensor) -> None:
        maps = getattr(self._captured, "maps", None)
        if maps is not None:
            maps.append(probabilities.float())

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and, per layer, the attention probabilities (batch, heads, tokens, tokens)."""
        self._captured.maps = maps = []
        try:
            with torch.inference_mode():
                logits = self.model(pixels)
        finally:
            self._captured.maps = None
        return logits, maps


def check_supported(model: torch.nn.Module) -> None:
    blocks = getattr(model, "blocks", [])
    if not isinstance(model, VisionTransformer) or not all(
        hasattr(block.attn, "fused_attn") and hasattr(block.attn, "attn_drop") for block in blocks
    ):
        raise HubError(
            f"These views read timm Vision Transformers (ViT, DeiT); the loaded model is a {type(model).__name__}."
        )
    if model.cls_token is None:
        raise HubError("These views follow the class token, and the loaded model has none (it averages its patches).")


_readers: "weakref.WeakKeyDictionary[torch.nn.Module, AttentionReader]" = weakref.WeakKeyDictionary()
_readers_lock = threading.Lock()


def attention_reader(model: torch.nn.Module) -> AttentionReader:
    """The reader of a loaded model, made once (two first requests must not both build one)."""
    with _readers_lock:
        if model not in _readers:
            _readers[model] = AttentionReader(model)
        return _readers[model]


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class VitAttention:
    """Every attention probability of one image: weights[layer - 1, head - 1, query, key]."""

    weights: np.ndarray  # (layers, heads, tokens, tokens), float32; every row sums to 1
    prefix: int  # tokens before the patches: the class token (index 0) and any register tokens
    grid: tuple[int, int]  # patch rows, patch columns
    patch_size: tuple[int, int]  # pixels (height, width) of one patch
    model_input: Image.Image  # what the model saw, normalisation undone

    @property
    def layers(self) -> int:
        return self.weights.shape[0]

    @property
    def heads(self) -> int:
        return self.weights.shape[1]


def read_attention(classifier: Any, image: Any) -> VitAttention:
    """Run the classifier's attention view on an image (any the tab accepts) and keep every attention map."""

    picture = load_image(image)
    reader = attention_reader(classifier.model)
    parameter = next(reader.model.parameters())
    pixels = classifier.transform(picture)
    _, maps = reader(pixels.unsqueeze(0).to(device=parameter.device, dtype=parameter.dtype))
    weights = torch.stack([m[0] for m in maps]).cpu().numpy()
    patch_h, patch_w = reader.model.patch_embed.patch_size
    grid = (pixels.shape[1] // patch_h, pixels.shape[2] // patch_w)
    prefix = reader.model.num_prefix_tokens
    assert weights.shape[-1] == prefix + grid[0] * grid[1], "the tokens are the prefix tokens and the patch grid"
    return VitAttention(weights, prefix, grid, (patch_h, patch_w), as_image(classifier, pixels))


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020): per layer the mean over heads plus the identity (the residual
    connection carries each token on), rows renormalised, multiplied from the first layer to the last.
    weights: (layers, heads, tokens, tokens) -> (tokens, tokens), each row sums to 1."""
    tokens = weights.shape[-1]
    flow = np.eye(tokens)
    for layer in weights.astype(np.float64):
        mixed = layer.mean(axis=0) + np.eye(tokens)
        flow = (mixed / mixed.sum(axis=-1, keepdims=True)) @ flow
    return flow


def check_layer_head(model: torch.nn.Module, layer: Any, head: Any) -> tuple[int, int]:
    """A layer from 1 (0 = the rollout) and a head from 1 (0 = the mean over heads) that the model has."""
    layers, heads = len(model.blocks), model.blocks[0].attn.num_heads
    layer = check_int(layer, "Layer (0 = rollout over all layers)", 0, layers)
    head = check_int(head, "Head (0 = the mean over heads)", 0, heads)
    if layer == 0 and head != 0:
        raise HubError(
            f"Head: the rollout (layer 0) mixes every head; ask for head 0, or for a layer from 1 to {layers} "
            "to see one head."
        )
    return layer, head


def attention_row(maps: VitAttention, layer: int, head: int, query: int = 0) -> np.ndarray:
    """A query token's attention over every token (prefix tokens first): layer 0 = the rollout, head 0 = the mean
    over heads; query 0 = the class token, else the patch counted from 1, row by row."""
    token = 0 if query == 0 else maps.prefix + query - 1
    if layer == 0:
        return rollout(maps.weights)[token]
    chosen = maps.weights[layer - 1]
    return (chosen.mean(axis=0) if head == 0 else chosen[head - 1])[token].astype(np.float64)


def vit_attention(classifier: Any, image: Any, layer: Any = 0, head: Any = 0) -> dict:
    """/vit_attention: the class token's attention over the patches, row-major, as fractions of its attention."""
    check_supported(classifier.model)
    layer, head = check_layer_head(classifier.model, layer, head)
    maps = read_attention(classifier, image)
    weights = attention_row(maps, layer, head)[maps.prefix :]
    return {"grid": list(maps.grid), "weights": weights.tolist(), "layer": layer, "head": head}


def position_similarity(model: torch.nn.Module) -> tuple[tuple[int, int], np.ndarray]:
    """Cosine similarity of every patch position's learned embedding to every other one: (grid, (n, n))."""
    check_supported(model)
    if model.pos_embed is None:
        raise HubError("The loaded model has no learned position embeddings.")
    # Without no_embed_class, the table's first rows belong to the class (and register) tokens, not to patches.
    skip = 0 if model.no_embed_class else model.num_prefix_tokens
    with torch.inference_mode():
        positions = torch.nn.functional.normalize(model.pos_embed[0, skip:].double(), dim=-1)
        similarity = (positions @ positions.T).numpy()
    grid = tuple(model.patch_embed.grid_size)
    assert similarity.shape[0] == grid[0] * grid[1]
    return grid, similarity


# ---------------------------------------------------------------------------------------------------------
# The pictures


COLOURS = "YlOrRd"  # dark red = the most attention; the grid figure's white numbers stay readable on it


def overlay(maps: VitAttention, patch_weights: np.ndarray, query: int = 0) -> Image.Image:
    """The model's input with the weights laid over it, one colour per patch, more opaque the larger the weight
    (relative to the largest), so ignored patches show the photo; a clicked patch is outlined. Drawn `scale` times
    larger, so a click's pixel maps straight to a patch."""
    width, height = maps.model_input.size
    scale = max(1, VIEW_SIZE // max(width, height))
    rows, cols = maps.grid
    relative = patch_weights.reshape(rows, cols) / max(float(patch_weights.max()), 1e-12)
    colours = colormaps[COLOURS](relative)
    colours[..., 3] = 0.05 + 0.6 * relative
    patch_h, patch_w = maps.patch_size
    tiles = Image.fromarray((colours * 255).round().astype(np.uint8), "RGBA")
    tiles = tiles.resize((cols * patch_w * scale, rows * patch_h * scale), Image.NEAREST)
    shown = maps.model_input.resize((width * scale, height * scale), Image.NEAREST).convert("RGBA")
    shown.alpha_composite(tiles)
    shown = shown.convert("RGB")
    if query:
        row, col = divmod(query - 1, cols)
        box = (col * patch_w * scale, row * patch_h * scale, (col + 1) * patch_w * scale, (row + 1) * patch_h * scale)
        ImageDraw.Draw(shown).rectangle(box, outline=(0, 255, 255), width=3)
    return shown


def patch_at(classifier: Any, x: int, y: int) -> int:
    """The patch (counted from 1, row by row) under a pixel of the overlay drawn for this classifier's input."""
    _, height, width = classifier.data_config["input_size"]
    scale = max(1, VIEW_SIZE // max(width, height))
    patch_h, patch_w = classifier.model.patch_embed.patch_size
    rows, cols = height // patch_h, width // patch_w
    row = min(rows - 1, max(0, int(y) // (patch_h * scale)))
    col = min(cols - 1, max(0, int(x) // (patch_w * scale)))
    return row * cols + col + 1


def patch_figure(maps: VitAttention, patch_weights: np.ndarray, title: str) -> Image.Image:
    rows, cols = maps.grid
    return heatmap(
        patch_weights.reshape(rows, cols),
        range(1, rows + 1),
        range(1, cols + 1),
        "patch row",
        "patch column",
        title,
        cmap=COLOURS,
        value_label="% of the query's attention",
    )


def similarity_figure(grid: tuple[int, int], similarity: np.ndarray) -> Image.Image:
    """The ViT paper's figure 7: one small map per patch position, laid out where that patch sits, showing how alike
    its position embedding is to every other position's."""
    rows, cols = grid
    tiles = np.full((rows * (rows + 1), cols * (cols + 1)), np.nan)  # a blank line between the small maps
    for position in range(rows * cols):
        r, c = divmod(position, cols)
        tiles[r * (rows + 1) : r * (rows + 1) + rows, c * (cols + 1) : c * (cols + 1) + cols] = similarity[
            position
        ].reshape(rows, cols)
    fig = Figure(figsize=(6.0, 5.3))
    ax = fig.subplots()
    image = ax.imshow(tiles, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    step = -(-max(rows, cols) // 16)  # at most 16 labels a side
    ax.set_xticks([c * (cols + 1) + (cols - 1) / 2 for c in range(0, cols, step)], range(1, cols + 1, step))
    ax.set_yticks([r * (rows + 1) + (rows - 1) / 2 for r in range(0, rows, step)], range(1, rows + 1, step))
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_title("Cosine similarity of each patch position's embedding to every other position", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="cosine similarity")
    return figure_png(fig)


_similarity_figures: "weakref.WeakKeyDictionary[torch.nn.Module, Image.Image]" = weakref.WeakKeyDictionary()


def cached_similarity_figure(model: torch.nn.Module) -> Image.Image:
    """The same for every photo: drawn once per loaded model."""
    if model not in _similarity_figures:
        _similarity_figures[model] = similarity_figure(*position_similarity(model))
    return _similarity_figures[model]


def describe(maps: VitAttention, layer: int, head: int, query: int, row: np.ndarray) -> str:
    who = "The class token" if query == 0 else f"Patch {query}"
    where = (
        "after rolling attention out over all layers (mean over heads, plus the residual)"
        if layer == 0
        else f"in layer {layer}, " + ("the mean over heads" if head == 0 else f"head {head}")
    )
    patches = row[maps.prefix :]
    brightest = int(patches.argmax()) + 1
    return (
        f"{who} {where}: the patches get **{100 * patches.sum():.1f}%** of its attention, the "
        f"{'class token' if maps.prefix == 1 else f'{maps.prefix} prefix tokens'} the rest. The largest share, "
        f"**{100 * patches.max():.1f}%**, goes to patch {brightest} (row {(brightest - 1) // maps.grid[1] + 1}, "
        f"column {(brightest - 1) % maps.grid[1] + 1}); the colours over the photo are relative to it."
    )


def reproduce_code(classifier: Any, layer: int, head: int, query: int, dtype: torch.dtype) -> str:
    token, who = ("0", "the class token") if query == 0 else (f"prefix + {query - 1}", f"patch {query}")
    if layer == 0:
        pick = f"""tokens = attentions[0].shape[-1]
rollout = torch.eye(tokens)
for layer in attentions:  # first layer to last
    mixed = layer.mean(dim=0) + torch.eye(tokens)  # mean over heads, plus the residual connection
    rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
row = rollout[{token}]  # {who}, after all layers"""
    else:
        heads = ".mean(dim=0)" if head == 0 else f"[{head - 1}]"
        pick = f"row = attentions[{layer - 1}]{heads}[{token}]  # {who}, layer {layer}, " + (
            "the mean over heads" if head == 0 else f"head {head}"
        )
    return f"""import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from timm.utils import AttentionExtract

model = timm.create_model({classifier.timm_name!r}, pretrained=True).eval().to({dtype})
for block in model.blocks:
    block.attn.fused_attn = False  # the fused kernel never forms the softmax; the plain path does
transform = create_transform(**resolve_model_data_config(model), is_training=False)
pixels = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0).to({dtype})
extract = AttentionExtract(model, method="hook")  # hooks each block's attn.attn_drop: the softmax output
with torch.inference_mode():
    attentions = [a[0].float() for a in extract(pixels).values()]  # per layer: (heads, tokens, tokens)
prefix = model.num_prefix_tokens  # the class token (and any register tokens) come before the patches
rows, cols = (size // patch for size, patch in zip(pixels.shape[-2:], model.patch_embed.patch_size))

{pick}
weights = row[prefix:].reshape(rows, cols)
print((100 * weights).round(decimals=1))  # percent of the query's attention on each patch

# Position embeddings: the class token's own row comes first unless the model adds it separately
positions = model.pos_embed[0, (0 if model.no_embed_class else prefix) :].detach().double()
positions = torch.nn.functional.normalize(positions, dim=-1)
similarity = positions @ positions.T  # (rows * cols) x (rows * cols)
"""


# ---------------------------------------------------------------------------------------------------------
# The section in the image-classification tab

INTRO = """
**What you are looking at:** the class token collects the patches' information layer by layer, and its final state
names the photo. *Rollout* follows that flow through all layers; a single layer and head shows one step. Colours are
the share of the query's attention on each patch; click a patch to see what *it* attends to.
"""
POSITIONS_INTRO = """
**Position embeddings:** the model gets its patches as a 1-D list and learns one vector per position. Each small map
is one position's similarity to every other: a trained model learns the 2-D layout (its row and its column light up).
"""


VIT_BASE_SHAPE = (12, 12)  # layers, heads: ViT-Base, for a model whose config is not on this machine yet


def configured_shape(store: ModelStore) -> tuple[int, int]:
    """The sliders' maxima before a run: the model's layers and heads from its config (a run then sets them from the
    loaded model), else ViT-Base's."""
    return configured_layers_and_heads(store.source(DEMO_ID), store.builds_tiny(DEMO_ID)) or VIT_BASE_SHAPE


def vit_attention_section(store: ModelStore, image: gr.Image) -> None:
    """The "Where the model looks" views under the classifier, on the photo in `image`."""
    with gr.Accordion("Where the model looks", open=True):
        gr.Markdown(INTRO)
        with gr.Row():
            layers, heads = configured_shape(store)
            layer = gr.Slider(0, layers, value=0, step=1, label="Layer (0 = rollout over all layers)")
            head = gr.Slider(0, heads, value=0, step=1, label="Head (0 = the mean over heads)")
            query = gr.Number(0, precision=0, minimum=0, label="Query (0 = the class token; click a patch)")
            run = gr.Button("Show where it looks")
        with gr.Row():
            shown = figure_image(label="Over the model's input: click a patch", elem_id="vit-attention-overlay")
            numbers = figure_image(
                label="The same shares, patch by patch", show_label=False, elem_id="vit-attention-grid"
            )
        summary = gr.Markdown(elem_id="vit-attention-summary")
        with gr.Row():  # beside its explanation: across the whole page, the square figure is taller than a screen
            gr.Markdown(POSITIONS_INTRO)
            positions = figure_image(
                label="Position embedding similarity", show_label=False, elem_id="vit-position-similarity"
            )
        code = code_accordion()

    def show(image: Any, layer: float, head: float, query: float, progress=gr.Progress()):
        classifier = load_model(store, DEMO_ID, progress)
        check_supported(classifier.model)
        rollout_with_a_head = layer == 0 and head != 0
        layer, head = check_layer_head(classifier.model, layer, 0 if layer == 0 else head)
        maps = read_attention(classifier, image)
        query = check_int(query or 0, "Query (0 = the class token, else a patch)", 0, maps.grid[0] * maps.grid[1])
        row = attention_row(maps, layer, head, query)
        title = ("Rollout" if layer == 0 else f"Layer {layer}, " + (f"head {head}" if head else "mean over heads")) + (
            ": the class token" if query == 0 else f": patch {query}"
        )
        return (
            overlay(maps, row[maps.prefix :], query),
            patch_figure(maps, row[maps.prefix :], title),
            describe(maps, layer, head, query, row)
            + (
                " (The rollout mixes every head: the head slider applies to a single layer.)"
                if rollout_with_a_head
                else ""
            ),
            cached_similarity_figure(classifier.model),
            reproduce_code(classifier, layer, head, query, store.dtype),
            gr.Slider(maximum=maps.layers),
            gr.Slider(maximum=maps.heads),
        )

    def pick_patch(evt: gr.SelectData) -> int:
        return patch_at(store.get(DEMO_ID), *evt.index[:2])

    def reset_query() -> int:
        return 0

    def fit_sliders_to_configured_model():  # on page load: the config on disk may be new; nothing is loaded
        layers, heads = configured_shape(store)
        return gr.Slider(maximum=layers), gr.Slider(maximum=heads)

    # The sliders follow the model: on page load from its config, after a run from the loaded model.
    gr.on(None, fit_sliders_to_configured_model, None, [layer, head], queue=False, api_visibility="private")
    outputs = [shown, numbers, summary, positions, code, layer, head]
    inputs = [image, layer, head, query]
    shown_again = dict(fn=show_errors(show), inputs=inputs, outputs=outputs, preprocess=False)
    image.upload(reset_query, None, query, api_visibility="private").then(**shown_again, api_visibility="private")
    gr.on([run.click, layer.release, head.release, query.submit], **shown_again, api_visibility="private")
    shown.select(show_errors(pick_patch), None, query, api_visibility="private").success(
        **shown_again, api_visibility="private"
    )
    register_api(store)


def register_api(store: ModelStore) -> None:
    def vit_attention_api(image: dict | None, layer: int = 0, head: int = 0) -> dict:
        """Where the image classifier (a Vision Transformer) looks: its class token's attention over the image's patches.

        Args:
            image: The photo, a file (PNG, JPEG, ...) sent with the request.
            layer: 0 = attention rollout over all layers (the default), else one layer counted from 1.
            head: 0 = the mean over the layer's heads (the default; the rollout always mixes every head), else one head counted from 1.

        Returns:
            {"grid": [patch rows, patch columns], "weights": the class token's attention on each patch, row by row, as fractions of its attention (with the class token's attention to itself they sum to 1), "layer", "head"}.
        """
        if image is not None:  # None gets load_image's "no image given"
            image = uploaded_file(image)  # never a path on the server that the caller names
        return vit_attention(store.get(DEMO_ID), image, layer, head)

    def vit_position_similarity_api() -> dict:
        """How alike the image classifier's learned position embeddings are: each patch position against every other.

        Returns:
            {"grid": [patch rows, patch columns], "similarity": a (rows x columns) by (rows x columns) matrix of cosine similarities from -1 to 1, positions numbered row by row}.
        """
        grid, similarity = position_similarity(store.get(DEMO_ID).model)
        return {"grid": list(grid), "similarity": similarity.tolist()}

    gr.api(show_errors(vit_attention_api), api_name="vit_attention")
    gr.api(show_errors(vit_position_similarity_api), api_name="vit_position_similarity")
