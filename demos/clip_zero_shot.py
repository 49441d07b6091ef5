"""CLIP zero-shot: an image encoder and a text encoder trained to agree, so any words become a classifier."""

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import open_clip
import pandas as pd
import torch
from safetensors.torch import save_file

from hub import model_thread
from hub.batching import MAX_BATCH, MicroBatcher
from hub.checks import check_text
from hub.demo import Demo
from hub.errors import HubError
from hub.images import check_total_pixels, example_photos, image_path, load_image
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore, is_local
from hub.ui import code_accordion, load_model, show_errors

DEMO_ID = "zero-shot"
DEFAULT_MODEL = "ViT-B-32/laion2b_s34b_b79k"  # open_clip model name / pretrained tag
DEFAULT_LABELS = "a cat, a dog, a cup of coffee, an astronaut, a rocket, a motorcycle"
DEFAULT_TEMPLATE = "a photo of a {}."
# The seven prompts OpenAI picked for ImageNet, as open_clip ships them; averaged when "ensemble" is on.
ENSEMBLE_TEMPLATES = [template("{}") for template in open_clip.SIMPLE_IMAGENET_TEMPLATES]
MAX_LABELS = 64  # labels after trimming and de-duplicating; more is refused with a message
MAX_LABELS_CHARS = 10_000
MAX_TEMPLATE_CHARS = 200
MAX_IMAGES = 12  # images in one comparison matrix
TEXT_CACHE_SIZE = 32  # label sets whose text embeddings are kept (least recently used ones are dropped)


# ---------------------------------------------------------------------------------------------------------
# The model


class TextEmbeddingCache:
    """Classifier weights per (labels, templates), least recently used dropped first: a repeated label set costs no
    text encoding. `encodings` counts how often the text encoder actually ran."""

    def __init__(self, size: int = TEXT_CACHE_SIZE):
        self.size = size
        self.encodings = 0
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            return None

    def put(self, key: tuple, weights: torch.Tensor) -> None:
        with self._lock:
            self.encodings += 1
            self._entries[key] = weights
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class ClipModel:
    model: torch.nn.Module
    preprocess: Any  # open_clip's eval transform for this model
    tokenizer: Any  # open_clip's tokenizer; truncates texts longer than its context
    model_name: str  # what open_clip.create_model_and_transforms was given, for the Code accordion
    pretrained: str | None
    text_cache: TextEmbeddingCache = field(default_factory=TextEmbeddingCache)


def open_clip_source(source: str) -> tuple[str, str | None]:
    """Split a source into open_clip's (model_name, pretrained): "ViT-B-32/laion2b_s34b_b79k" (name/tag),
    "hf-hub:org/repo" or "org/repo" (a Hub repo with open_clip_config.json), or a local folder."""
    if source.startswith(("hf-hub:", "local-dir:")):
        return source, None
    if is_local(source):
        return f"local-dir:{Path(source).expanduser().resolve()}", None
    name, _, tag = source.partition("/")
    if name in open_clip.list_models():
        if not tag:
            raise HubError(f"'{source}' names no weights: add a pretrained tag, e.g. {name}/{pretrained_tags(name)}.")
        return name, tag
    return f"hf-hub:{source}", None


def pretrained_tags(name: str) -> str:
    return ", ".join(tag for model, tag in open_clip.list_pretrained() if model == name) or "none known"


def hub_repos(source: str) -> list[str]:
    """The Hub repo a source downloads from, so `python -m hub list` can tell whether it is cached."""
    try:
        weights = hub_weights(*open_clip_source(source))
    except HubError:  # an unknown name or tag: nothing to look for
        return []
    return [weights[0]] if weights else []


def hub_weights(name: str, pretrained: str | None) -> tuple[str, str] | None:
    """(repo, file) of a Hub source's safetensors weights, or None for a local folder. A pretrained tag's config
    names "org/repo/" or "org/repo/file.bin"; open_clip looks for the file's .safetensors twin first."""
    if name.startswith("local-dir:"):
        return None
    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:"), "open_clip_model.safetensors"
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        raise HubError(f"open_clip knows no weights '{pretrained}' for {name}; known: {pretrained_tags(name)}.")
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise HubError(f"{name}/{pretrained} has no weights on the Hugging Face Hub, so no safetensors to load.")
    org, repo, filename = (hub.split("/", 2) + ["", ""])[:3]
    if filename in ("", "open_clip_pytorch_model.bin"):
        return f"{org}/{repo}", "open_clip_model.safetensors"
    return f"{org}/{repo}", str(Path(filename).with_suffix(".safetensors"))


def require_safetensors(name: str, pretrained: str | None) -> None:
    """Fetch (or find in the cache) the safetensors weights before open_clip loads: open_clip prefers them when they
    exist, but would fall back to a pickled checkpoint, which this hub never loads."""
    from huggingface_hub import hf_hub_download

    weights = hub_weights(name, pretrained)
    if weights is not None:
        hf_hub_download(*weights)  # raises when the repo has no safetensors file (or it is not cached offline)


def load_clip(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> ClipModel:
    name, pretrained = open_clip_source(source)
    require_safetensors(name, pretrained)
    if (
        name.startswith("local-dir:")
        and not (Path(name.removeprefix("local-dir:")) / "open_clip_model.safetensors").is_file()
    ):
        raise HubError(f"{source} has no open_clip_model.safetensors next to its open_clip_config.json.")
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model = model.eval().to(dtype)
    return ClipModel(model, preprocess, open_clip.get_tokenizer(name), name, pretrained)


TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},  # CLIP's BPE
}


def build_tiny_clip(folder: Path) -> None:
    """A 2-layer CLIP with a 16-token text context, saved as open_clip loads a local folder."""
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CONFIG)
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")


# ---------------------------------------------------------------------------------------------------------
# The work


def parse_labels(text: Any) -> list[str]:
    """Labels from comma- or newline-separated text (or a list of labels): trimmed, blanks dropped, duplicates
    (ignoring case) dropped, at most MAX_LABELS."""
    if isinstance(text, list | tuple) and all(isinstance(label, str) for label in text):
        pieces = list(text)
        check_text(" ".join(pieces), "Labels", MAX_LABELS_CHARS, allow_empty=True)
    else:
        pieces = re.split(r"[,\n]", check_text(text, "Labels", MAX_LABELS_CHARS))
    labels: dict[str, str] = {}
    for label in pieces:
        label = " ".join(label.split())
        if label and label.casefold() not in labels:
            labels[label.casefold()] = label
    if not labels:
        raise HubError("No labels: type a few words or phrases, separated by commas or new lines.")
    if len(labels) > MAX_LABELS:
        raise HubError(f"Too many labels: {len(labels)}; at most {MAX_LABELS} at once.")
    return list(labels.values())


def check_template(template: Any) -> str:
    template = check_text(template, "Prompt template", MAX_TEMPLATE_CHARS)
    if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise HubError('The prompt template needs exactly one {} where the label goes, e.g. "a photo of a {}."')
    return template


def prompt_templates(template: Any, ensemble: bool) -> list[str]:
    template = check_template(template)
    if not isinstance(ensemble, bool):
        raise HubError(f"Ensemble must be true or false, got {ensemble!r}.")
    if not ensemble:
        return [template]
    return list(dict.fromkeys([template, *ENSEMBLE_TEMPLATES]))


def label_weights(clip: ClipModel, labels: list[str], templates: list[str]) -> torch.Tensor:
    """open_clip's zero-shot classifier for these labels (embed_dim x labels, each column unit length), cached."""
    key = (tuple(labels), tuple(templates))
    weights = clip.text_cache.get(key)
    if weights is None:
        device = next(clip.model.parameters()).device
        weights = open_clip.build_zero_shot_classifier(
            clip.model, clip.tokenizer, labels, templates, num_classes_per_batch=None, device=device
        ).float()
        clip.text_cache.put(key, weights)
    return weights


@dataclass
class ZeroShotResult:
    labels: list[str]
    probabilities: list[dict[str, float]]  # per image: label -> probability, in label order
    similarities: list[list[float]]  # per image: cosine similarity with each label's text embedding


@dataclass
class ZeroShotRequest:
    """A request checked and decoded: its labels and prompt templates, and each image as the model's input."""

    labels: list[str]
    templates: list[str]
    pixels: list[torch.Tensor]  # 3 x H x W each, after open_clip's preprocessing


def zero_shot_request(
    clip: ClipModel, images: list[Any], labels: Any, template: Any = DEFAULT_TEMPLATE, ensemble: bool = False
) -> ZeroShotRequest:
    """Check everything a visitor sent (a HubError says what is wrong) and cut each image down to the model's input."""
    labels = parse_labels(labels)
    templates = prompt_templates(template, ensemble)
    if not images:
        raise HubError("No image given: upload, paste or take a picture first.")
    if len(images) > MAX_IMAGES:
        raise HubError(f"Too many images: {len(images)}; at most {MAX_IMAGES} at once.")
    check_total_pixels(images)  # from the files' headers, before anything is decoded
    # Each image is decoded and at once cut down to the model's input, so only one full-size picture is in memory.
    pixels = [
        clip.preprocess(load_image(image, f"Image {n}" if len(images) > 1 else "Image"))
        for n, image in enumerate(images, 1)
    ]
    return ZeroShotRequest(labels, templates, pixels)


def image_features(clip: ClipModel, pixels: list[torch.Tensor]) -> list[torch.Tensor]:
    """One forward pass of the image encoder over several inputs stacked: each image's unit-length embedding. Each
    image is encoded on its own inside the model, so batching leaves its embedding as it is alone."""
    parameter = next(clip.model.parameters())
    with torch.inference_mode():
        features = clip.model.encode_image(torch.stack(pixels).to(parameter.device, parameter.dtype), normalize=True)
    return list(features.float())


def zero_shot_scores(clip: ClipModel, request: ZeroShotRequest, features: torch.Tensor) -> ZeroShotResult:
    """Compare the images' embeddings (images x embed_dim) with the labels', as open_clip's zero-shot recipe does."""
    weights = label_weights(clip, request.labels, request.templates)
    with torch.inference_mode():
        similarities = features @ weights.to(features.device)
        logits = clip.model.logit_scale.exp().float() * similarities
        bias = getattr(clip.model, "logit_bias", None)
        # CLIP compares the labels with each other (softmax); SigLIP scores each label on its own (sigmoid).
        probabilities = logits.softmax(-1) if bias is None else (logits + bias.float()).sigmoid()
    return ZeroShotResult(
        request.labels,
        [dict(zip(request.labels, row)) for row in probabilities.tolist()],
        similarities.tolist(),
    )


def zero_shot(
    clip: ClipModel, images: list[Any], labels: Any, template: Any = DEFAULT_TEMPLATE, ensemble: bool = False
) -> ZeroShotResult:
    """Match every image with every label, exactly as open_clip's zero-shot recipe does."""
    request = zero_shot_request(clip, images, labels, template, ensemble)
    return zero_shot_scores(clip, request, torch.stack(image_features(clip, request.pixels)))


def matrix_table(result: ZeroShotResult, names: list[str]) -> pd.DataFrame:
    """Images x labels, each cell the label's probability for that image."""
    rows = [
        {"image": name, **{label: round(p, 4) for label, p in probs.items()}}
        for name, probs in zip(names, result.probabilities)
    ]
    return pd.DataFrame(rows, columns=["image", *result.labels])


def heatmap(table: pd.DataFrame) -> Any:
    """The table with each probability cell shaded from white (0) to deep blue (1)."""

    def shade(value: Any) -> str:
        if not isinstance(value, float):
            return ""
        light = round(255 - 200 * value)
        text = "white" if value > 0.55 else "black"
        return f"background-color: rgb({light}, {light + round(40 * value)}, 255); color: {text}"

    # Shown as percent; the numbers underneath (what /zero_shot_matrix returns) stay fractions.
    return table.style.map(shade, subset=list(table.columns[1:])).format("{:.1%}", subset=list(table.columns[1:]))


def reproduce_code(clip: ClipModel, labels: list[str], templates: list[str], dtype: torch.dtype) -> str:
    return f"""import open_clip
import torch
from PIL import Image

model, _, preprocess = open_clip.create_model_and_transforms({clip.model_name!r}, pretrained={clip.pretrained!r})
model = model.eval().to({dtype})
tokenizer = open_clip.get_tokenizer({clip.model_name!r})
labels = {labels!r}
# one column per label: the normalised mean of its normalised prompt embeddings
weights = open_clip.build_zero_shot_classifier(model, tokenizer, labels, templates={templates!r}).float()
image = preprocess(Image.open("photo.jpg").convert("RGB")).unsqueeze(0).to({dtype})
with torch.inference_mode():
    features = model.encode_image(image, normalize=True).float()
    probabilities = (model.logit_scale.exp().float() * features @ weights).softmax(-1)[0]
print(dict(zip(labels, probabilities.tolist())))
"""


# ---------------------------------------------------------------------------------------------------------
# The tab

EXAMPLE_LABEL_SETS = Path(__file__).resolve().parent.parent / "assets" / "zero_shot_labels.json"


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
            label="Probability of each label per image", interactive=False, elem_id="zero-shot-matrix"
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

    from demos.clip_relevance import relevance_section  # here, not at the top: that module builds on this one

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
