"""The zero-shot tab: a photo against any labels, several photos against the labels, then which patches made each match."""

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from demos.clip.relevance import relevance_section
from demos.clip.zero_shot import (
    DEFAULT_LABELS,
    DEFAULT_MODEL,
    DEFAULT_TEMPLATE,
    DEMO_ID,
    ENSEMBLE_TEMPLATES,
    MAX_IMAGES,
    MAX_LABELS,
    MAX_LABELS_CHARS,
    MAX_TEMPLATE_CHARS,
    ZeroShotResult,
    build_tiny_clip,
    heatmap,
    hub_repos,
    image_features,
    load_clip,
    matrix_table,
    prompt_templates,
    reproduce_code,
    zero_shot,
    zero_shot_request,
    zero_shot_scores,
)
from hub import model_thread
from hub.batching import MAX_BATCH, MicroBatcher
from hub.demo import Demo
from hub.images import example_photos, image_path
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore
from hub.ui import code_accordion, load_model, show_errors

# ---------------------------------------------------------------------------------------------------------
# The tab

EXAMPLE_LABEL_SETS = Path(__file__).resolve().parents[2] / "assets" / "zero_shot_labels.json"


def example_label_sets() -> dict[str, str]:
    return json.loads(EXAMPLE_LABEL_SETS.read_text(encoding="utf-8"))


def file_names(files: list[Any]) -> list[str]:
    names = [Path(image_path(f) or f"image {n}").name for n, f in enumerate(files, 1)]
    if isinstance(files, list) and files and isinstance(files[0], dict):
        names = [f.get("orig_name") or name for f, name in zip(files, names)]
    return [f"{n}. {name}" for n, name in enumerate(names, 1)]


def zero_shot_tab(store: ModelStore) -> None:
    gr.Markdown(
        "CLIP turns an image and a sentence into points in the same space; the closer they are, the better they "
        "match. Type any labels: each is put into the prompt template, and CLIP says which fits the image best. "
        f"Labels are trimmed and de-duplicated, at most {MAX_LABELS}; a label longer than the text encoder's "
        "context is cut at the end."
    )
    label_sets = example_label_sets()
    with gr.Row():
        with gr.Column():
            image = gr.Image(
                label="Image",
                type="filepath",
                image_mode=None,
                sources=["upload", "webcam", "clipboard"],
                height=300,
                elem_id="zero-shot-input",
            )
            labels = gr.Textbox(
                label="Labels (comma or newline separated)", value=DEFAULT_LABELS, lines=3, max_length=MAX_LABELS_CHARS
            )
            template = gr.Textbox(
                label="Prompt template ({} is the label)", value=DEFAULT_TEMPLATE, max_length=MAX_TEMPLATE_CHARS
            )
            ensemble = gr.Checkbox(
                label=f"Ensemble: also average open_clip's {len(ENSEMBLE_TEMPLATES)} ImageNet prompt templates",
                value=False,
            )
            run = gr.Button("Match", variant="primary")
            examples = gr.Column()
        with gr.Column():
            probabilities = gr.Label(label="Which label fits", elem_id="zero-shot-label")
    with gr.Accordion("Compare many images with the labels", open=False):
        files = gr.File(
            label=f"Images (up to {MAX_IMAGES})", file_count="multiple", file_types=["image"], elem_id="zero-shot-files"
        )
        compare = gr.Button("Compare the images")
        matrix = gr.Dataframe(
            pd.DataFrame(columns=["image"]),  # a label per column after a run
            label="Probability of each label per image",
            interactive=False,
            elem_id="zero-shot-matrix",
        )
    code = code_accordion()
    link_inputs(DEMO_ID, labels=labels, template=template, ensemble=ensemble)  # and a Copy link button
    last = gr.State(time_to_live=600)  # per visitor: the labels and templates the Code accordion shows
    # Visitors who ask at about the same time share one pass of the image encoder; each request is checked and its
    # image decoded on its own, and its labels' embeddings come from the cache (or its own text encoding).
    batched = MicroBatcher(lambda pixels: image_features(store.get(DEMO_ID), pixels))

    def match(image: Any, labels: Any, template: Any, ensemble: Any, progress: gr.Progress | None) -> ZeroShotResult:
        clip = load_model(store, DEMO_ID, progress)
        request = model_thread.run(zero_shot_request, clip, [image], labels, template, ensemble)
        features = batched(request.pixels[0])  # the image encoder's pass, shared with other visitors
        return model_thread.run(zero_shot_scores, clip, request, features.unsqueeze(0))

    # preprocess=False: the handler gets the uploaded files themselves, so hub.images can refuse bad ones clearly.
    @show_errors
    @off_model_thread  # the batcher runs the image encoder on the model thread
    def zero_shot_endpoint(
        image: Any,
        labels: str = DEFAULT_LABELS,
        template: str = DEFAULT_TEMPLATE,
        ensemble: bool = False,
        progress=gr.Progress(),
    ):
        """Match an image with any labels: CLIP's probability for each label, over the labels given.

        Args:
            image: the image, an uploaded file (gradio_client's handle_file(path)); JPEG, PNG, GIF, WebP...
            labels: the labels, separated by commas or new lines (or a list of strings); trimmed, duplicates dropped,
                at most 64. Default: "a cat, a dog, a cup of coffee, an astronaut, a rocket, a motorcycle".
            template: the prompt each label is put into, with one {} where the label goes; default "a photo of a {}.".
            ensemble: also average open_clip's ImageNet prompt templates with this one; default false.

        Returns:
            Each label with its probability (a fraction from 0 to 1; they add up to 1), most likely first.
        """
        return match(image, labels, template, ensemble, progress).probabilities[0]

    @show_errors
    @off_model_thread
    def show(
        image: Any, labels: str = DEFAULT_LABELS, template: str = DEFAULT_TEMPLATE, ensemble: bool = False,
        progress=gr.Progress(),
    ):  # fmt: skip
        result = match(image, labels, template, ensemble, progress)
        used = prompt_templates(template, ensemble)
        return result.probabilities[0], reproduce_code(store.get(DEMO_ID), result.labels, used, store.dtype)

    @show_errors
    def run_matrix(
        files: list[Any],
        labels: str = DEFAULT_LABELS,
        template: str = DEFAULT_TEMPLATE,
        ensemble: bool = False,
        progress=gr.Progress(),
    ):
        """Compare many images with the same labels: a table of each label's probability per image.

        Args:
            files: up to 12 uploaded image files (gradio_client's handle_file(path) for each).
            labels: the labels, separated by commas or new lines; trimmed, duplicates dropped, at most 64.
            template: the prompt each label is put into, with one {} where the label goes; default "a photo of a {}.".
            ensemble: also average open_clip's ImageNet prompt templates with this one; default false.

        Returns:
            A table with one row per image ("1. name.jpg") and one column per label, each cell the probability (a
            fraction from 0 to 1, rounded to 4 places) that the label fits the image.
        """
        if files is not None and not isinstance(files, list):
            files = [files]
        clip = load_model(store, DEMO_ID, progress)
        result = zero_shot(clip, files or [], labels, template, ensemble)
        return heatmap(matrix_table(result, file_names(files))), (result.labels, prompt_templates(template, ensemble))

    @show_errors
    def explain(used: tuple | None):
        return reproduce_code(store.get(DEMO_ID), *used, store.dtype) if used else ""

    inputs, shown = [image, labels, template, ensemble], [probabilities, code]
    # The page's one event fills every view at once; the HTTP endpoint answers the label alone (no trigger on the page).
    gr.on(
        [run.click, image.upload, labels.submit, template.submit], show, inputs, shown, preprocess=False,
        api_visibility="private", concurrency_limit=MAX_BATCH, concurrency_id=DEMO_ID,
    )  # fmt: skip
    gr.on(
        [], zero_shot_endpoint, inputs, probabilities, api_name="zero_shot", preprocess=False,
        concurrency_limit=MAX_BATCH, concurrency_id=DEMO_ID,
    )  # fmt: skip
    with examples:
        gr.Examples(
            [[photo, text] for photo, text in zip(example_photos(), label_sets.values())],
            inputs=[image, labels], outputs=shown, fn=show, run_on_click=True, cache_examples=False,
            label="Photos from scikit-image with label sets: click one to match it", elem_id="zero-shot-examples",
        )  # fmt: skip
    matrix_event = compare.click(
        run_matrix, [files, labels, template, ensemble], [matrix, last], api_name="zero_shot_matrix", preprocess=False
    )
    matrix_event.success(explain, last, code, api_visibility="private")

    relevance_section(store, image, labels, template, ensemble)


DEMO = Demo(
    id=DEMO_ID,
    title="Zero-shot (CLIP)",
    default_model=DEFAULT_MODEL,
    load=load_clip,
    build_tiny=build_tiny_clip,
    tab=zero_shot_tab,
    hub_repos=hub_repos,
)
