"""The image classification tab: the photo, the classes, how the model cut it into patches, then where it looked."""

from typing import Any

import gradio as gr

from demos.vision.image_classification import (
    DEFAULT_MODEL,
    DEMO_ID,
    MAX_TOP_K,
    TOP_K,
    ClassificationResult,
    as_image,
    build_tiny_vit,
    check_top_k,
    class_probabilities,
    hub_repos,
    load_classifier,
    model_input,
    patch_view,
    reproduce_code,
    top_classes,
)
from demos.vision.vit_attention_section import vit_attention_section
from hub import model_thread
from hub.batching import MAX_BATCH, MicroBatcher
from hub.demo import Demo
from hub.images import example_photos
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors

# ---------------------------------------------------------------------------------------------------------
# The tab


def image_classification_tab(store: ModelStore) -> None:
    gr.Markdown(
        "A Vision Transformer cuts the photo into small square patches, turns each into a token and reads them "
        "like the words of a sentence. Upload a photo, paste one or use the webcam."
    )
    with gr.Row():
        with gr.Column():
            image = gr.Image(
                label="Photo",
                type="filepath",
                image_mode=None,
                sources=["upload", "webcam", "clipboard"],
                height=320,
                elem_id="image-classification-input",
            )
            top_k = gr.Slider(1, MAX_TOP_K, value=TOP_K, step=1, label="Top classes")
            run = gr.Button("Classify", variant="primary")
            examples = gr.Column()
        with gr.Column():
            label = gr.Label(label="Top classes", elem_id="image-classification-label")
            patches = gr.Image(label="The model's input, cut into patches", interactive=False, height=320)
            summary = gr.Markdown(elem_id="image-classification-patches")
    code = code_accordion()
    link_inputs(DEMO_ID, top_k=top_k)  # ?tab=image-classification&top_k=3 and a Copy link button
    # Visitors who ask at about the same time share one forward pass; each image is checked and decoded on its own.
    batched = MicroBatcher(lambda inputs: class_probabilities(store.get(DEMO_ID), inputs))

    # preprocess=False: the handler gets the uploaded file itself, so hub.images can refuse bad files with a message.
    @show_errors
    @off_model_thread  # the batcher runs the forward pass on the model thread
    def classify_image_endpoint(image: Any, top_k: float = TOP_K, progress=gr.Progress()):
        """Name what is in a photo: the Vision Transformer's most likely ImageNet classes.

        Args:
            image: the photo, an uploaded image file (gradio_client's handle_file(path)); JPEG, PNG, GIF, WebP...
            top_k: how many classes to return, 1 to 20; default 5.

        Returns:
            The top_k classes, each with its probability (a fraction from 0 to 1), most likely first.
        """
        classifier = load_model(store, DEMO_ID, progress)
        pixels = model_thread.run(model_input, classifier, image)
        return model_thread.run(top_classes, classifier, batched(pixels), check_top_k(classifier, top_k))

    @show_errors
    @off_model_thread
    def show(image: Any, top_k: float = TOP_K, progress=gr.Progress()):
        classifier = load_model(store, DEMO_ID, progress)
        pixels = model_thread.run(model_input, classifier, image)
        probabilities, k = batched(pixels), check_top_k(classifier, top_k)
        # as classify_image does, with the forward pass in the batcher and the rest on the model thread
        result = model_thread.run(
            lambda: ClassificationResult(top_classes(classifier, probabilities, k), as_image(classifier, pixels))
        )
        view = model_thread.run(patch_view, classifier, result.model_input)
        return (
            result.probabilities,
            view.image,
            view.summary,
            reproduce_code(classifier, len(result.probabilities), store.dtype),
        )

    shown = [label, patches, summary, code]
    # The page's one event fills every view at once; the HTTP endpoint answers the label alone (no trigger on the page).
    gr.on(
        [run.click, image.upload], show, [image, top_k], shown, preprocess=False, api_visibility="private",
        concurrency_limit=MAX_BATCH, concurrency_id=DEMO_ID,
    )  # fmt: skip
    gr.on(
        [], classify_image_endpoint, [image, top_k], label, api_name="classify_image", preprocess=False,
        concurrency_limit=MAX_BATCH, concurrency_id=DEMO_ID,
    )  # fmt: skip
    with examples:
        gr.Examples(
            [[photo] for photo in example_photos()], inputs=[image], outputs=shown, fn=show, run_on_click=True,
            cache_examples=False, label="Photos from scikit-image: click one to classify it",
            elem_id="image-classification-examples",
        )  # fmt: skip

    # Under the classifier: where it looked, on the same photo.
    vit_attention_section(store, image)


DEMO = Demo(
    id=DEMO_ID,
    title="Image classification (ViT)",
    default_model=DEFAULT_MODEL,
    load=load_classifier,
    build_tiny=build_tiny_vit,
    tab=image_classification_tab,
    hub_repos=hub_repos,
)
