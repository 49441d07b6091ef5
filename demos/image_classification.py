"""Image classification: a Vision Transformer cuts a photo into 16x16 patches, reads them like words, names the photo."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import timm
import torch
from PIL import Image, ImageDraw
from timm.data import ImageNetInfo, create_transform, infer_imagenet_subset, resolve_model_data_config

from hub import model_thread
from hub.batching import MAX_BATCH, MicroBatcher
from hub.checks import check_int
from hub.demo import Demo
from hub.errors import HubError
from hub.images import example_photos, load_image
from hub.links import link_inputs
from hub.model_thread import off_model_thread
from hub.models import ModelStore, is_local
from hub.ui import code_accordion, load_model, show_errors

DEMO_ID = "image-classification"
DEFAULT_MODEL = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
MAX_TOP_K = 20
TOP_K = 5  # the one default for the slider, the endpoint and the core
PATCH_VIEW_SIZE = 448  # the model's input is drawn this large so that the patch grid is easy to see


# ---------------------------------------------------------------------------------------------------------
# The model


@dataclass
class ImageClassifier:
    model: torch.nn.Module
    transform: Any  # timm's eval transform, built from the model's own data config
    data_config: dict  # input_size, mean, std, interpolation, crop_pct, crop_mode
    labels: list[str]  # a readable, unique name per output class
    timm_name: str  # what timm.create_model was given, for the Code accordion


def timm_name(source: str) -> str:
    """What timm.create_model takes for a source: a local folder saved by save_for_hf, a Hub id, or a timm name."""
    if source.startswith(("local-dir:", "hf-hub:")):
        return source
    if is_local(source):
        return f"local-dir:{Path(source).expanduser().resolve()}"
    if "/" in source:  # e.g. timm/vit_small_patch16_224.augreg_in21k_ft_in1k
        return f"hf-hub:{source}"
    return source


def hub_repos(source: str) -> list[str]:
    """The Hub repo a timm source downloads from, so `python -m hub list` can tell whether it is cached."""
    name = timm_name(source)
    if name.startswith("local-dir:"):
        return []
    if name.startswith("hf-hub:"):
        return [name.removeprefix("hf-hub:")]
    cfg = timm.models.get_pretrained_cfg(name)
    return [cfg.hf_hub_id] if cfg and cfg.hf_hub_id else [f"timm/{name}"]


def class_names(model: torch.nn.Module) -> list[str]:
    """Human-readable class names: ImageNet descriptions when the head is an ImageNet one, else the saved names."""
    num_classes = model.num_classes
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        names = [info.index_to_description(i) for i in range(num_classes)]
    else:
        names = list(model.pretrained_cfg.get("label_names") or [])
        names += [f"class {i}" for i in range(len(names), num_classes)]
    # ImageNet has a few twins ("crane" the bird and the machine); a label dict needs unique keys.
    counts = Counter(names)
    return [f"{name} (class {i})" if counts[name] > 1 else name for i, name in enumerate(names)]


def load_classifier(source: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> ImageClassifier:
    name = timm_name(source)
    if name.startswith("local-dir:") and not (Path(name.removeprefix("local-dir:")) / "model.safetensors").is_file():
        raise HubError(
            f"{source} has no model.safetensors (save it with timm.models.save_for_hf(..., safe_serialization=True))."
        )
    # From the Hub, ask for model.safetensors by name: timm would otherwise fall back to a pickled checkpoint.
    safetensors_only = dict(hf_hub_filename="model.safetensors")
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=safetensors_only)
    model = model.eval().to(device=device, dtype=dtype)
    data_config = resolve_model_data_config(model)
    transform = create_transform(**data_config, is_training=False)
    return ImageClassifier(model, transform, data_config, class_names(model), name)


def build_tiny_vit(folder: Path) -> None:
    """A 2-layer ViT on 32x32 inputs with 8x8 patches and an ImageNet-1k head, saved the way timm saves for the Hub."""
    shape = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=1000, **shape)
    # timm starts the head near zero, which gives every class about 1/1000; a wider head makes the top-k differ
    # clearly from image to image, so tests comparing rankings mean something.
    torch.nn.init.normal_(model.head.weight, std=1.0)
    timm.models.save_for_hf(model, folder, safe_serialization=True, model_args=shape)


# ---------------------------------------------------------------------------------------------------------
# The work


@dataclass
class ClassificationResult:
    probabilities: dict[str, float]  # the top-k classes, most likely first
    model_input: Image.Image  # the preprocessed input with the normalisation undone: what the model saw


def model_input(classifier: ImageClassifier, image: Any) -> torch.Tensor:
    """A visitor's image, checked and decoded, as the model's input (3 x H x W): what joins a batch."""
    return classifier.transform(load_image(image))


def class_probabilities(classifier: ImageClassifier, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """One forward pass over several model inputs stacked: each image's probabilities over every class. Each image
    is computed on its own in the model (no attention across the batch), so it gets the answer it gets alone."""
    parameter = next(classifier.model.parameters())
    with torch.inference_mode():
        logits = classifier.model(torch.stack(inputs).to(device=parameter.device, dtype=parameter.dtype))
    return list(logits.float().softmax(-1).cpu())


def top_classes(classifier: ImageClassifier, probabilities: torch.Tensor, top_k: int) -> dict[str, float]:
    top = probabilities.topk(top_k)
    return {classifier.labels[i]: p for p, i in zip(top.values.tolist(), top.indices.tolist())}


def check_top_k(classifier: ImageClassifier, top_k: Any) -> int:
    return check_int(top_k, "Top classes", 1, min(MAX_TOP_K, len(classifier.labels)))


def classify_image(
    classifier: ImageClassifier,
    image: Any,
    top_k: int = TOP_K,
    run: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClassificationResult:
    """The top-k classes for an image. `run` turns a model input into its probabilities: by default a forward pass
    of its own; the tab passes its batcher, which runs it with the other visitors' images."""
    pixels = model_input(classifier, image)
    top_k = check_top_k(classifier, top_k)
    probabilities = run(pixels) if run else class_probabilities(classifier, [pixels])[0]
    return ClassificationResult(top_classes(classifier, probabilities, top_k), as_image(classifier, pixels))


def as_image(classifier: ImageClassifier, pixels: torch.Tensor) -> Image.Image:
    """A normalised input tensor (3 x H x W) back as an 8-bit picture, to show what the model saw."""
    mean = torch.tensor(classifier.data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(classifier.data_config["std"]).view(3, 1, 1)
    seen = (pixels.float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return Image.fromarray((seen * 255).round().astype(np.uint8))


@dataclass
class PatchView:
    image: Image.Image  # the model's input with the patch grid drawn on it
    summary: str  # the patch count and sequence length, in words


def patch_view(classifier: ImageClassifier, model_input: Image.Image) -> PatchView:
    """The image as the model sees it (after resizing and cropping), cut into its patch grid."""
    width, height = model_input.size
    scale = max(1, PATCH_VIEW_SIZE // max(height, width))
    image = model_input.resize((width * scale, height * scale), Image.NEAREST)

    patch_embed = getattr(classifier.model, "patch_embed", None)
    if patch_embed is None or not hasattr(patch_embed, "patch_size"):
        return PatchView(image, f"The model sees a {width}x{height} image. It is not a patch-based transformer.")
    patch_h, patch_w = patch_embed.patch_size
    rows, cols = height // patch_h, width // patch_w
    draw = ImageDraw.Draw(image)
    for col in range(cols + 1):
        draw.line([(col * patch_w * scale, 0), (col * patch_w * scale, height * scale)], fill=(255, 255, 0), width=1)
    for row in range(rows + 1):
        draw.line([(0, row * patch_h * scale), (width * scale, row * patch_h * scale)], fill=(255, 255, 0), width=1)
    patches = rows * cols
    extra = getattr(classifier.model, "num_prefix_tokens", 1)
    extra_words = "the class token" if extra == 1 else f"{extra} extra tokens (class and register tokens)"
    summary = (
        f"The model sees a {width}x{height} image cut into {rows}x{cols} = **{patches} patches** of "
        f'{patch_w}x{patch_h} pixels. Each patch becomes one token ("an image is worth 16x16 words"); with '
        f"{extra_words} the transformer reads a **sequence of {patches + extra} tokens**."
    )
    return PatchView(image, summary)


def reproduce_code(classifier: ImageClassifier, top_k: int, dtype: torch.dtype) -> str:
    return f"""import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_model_data_config

model = timm.create_model({classifier.timm_name!r}, pretrained=True).eval().to({dtype})
transform = create_transform(**resolve_model_data_config(model), is_training=False)
image = Image.open("photo.jpg").convert("RGB")
with torch.inference_mode():
    probabilities = model(transform(image).unsqueeze(0).to({dtype}))[0].float().softmax(-1)
names = ImageNetInfo()
for p, i in zip(*probabilities.topk({top_k})):
    print(names.index_to_description(int(i)), float(p))
"""


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

    # Imported here: the section reads this module's classifier (ImageClassifier, as_image).
    from demos.vit_attention import vit_attention_section

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
