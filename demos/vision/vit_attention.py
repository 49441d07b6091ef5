"""Where the Vision Transformer looks: attention rollout over the visitor's photo, any layer and head's attention
from the class token (or a clicked patch) over the patches, and the 2-D layout the learned position embeddings hold.

Every number comes from the classifier the image-classification tab loaded, read through a view that shares its
weights and computes attention the plain way (softmax included), so the tab's own /classify_image stays fused and fast.
The model's view, then the work, then the pictures and the code; vit_attention_section.py shows them in the tab.
"""

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from timm.models import VisionTransformer

from demos.vision.image_classification import as_image
from hub.checks import check_int
from hub.errors import HubError
from hub.figures import figure_png, heatmap
from hub.images import load_image
from hub.models import weight_sharing_copy

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
