"""The "Where the model looks" section of the image-classification tab, over the photo the classifier read
(vit_attention.py does the work), with the endpoints /vit_attention and /vit_position_similarity."""

from typing import Any

import gradio as gr

from demos.vision.image_classification import DEMO_ID, configured_layers_and_heads
from demos.vision.vit_attention import (
    attention_row,
    cached_similarity_figure,
    check_layer_head,
    check_supported,
    describe,
    overlay,
    patch_at,
    patch_figure,
    position_similarity,
    read_attention,
    reproduce_code,
    vit_attention,
)
from hub.checks import check_int
from hub.images import uploaded_file
from hub.models import ModelStore
from hub.ui import code_accordion, figure_image, load_model, show_errors

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
