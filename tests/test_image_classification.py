"""Image classification: the core against timm's own recipe on the same saved weights, then /classify_image and the tab."""

import gradio as gr
import pytest
import timm
import torch
from gradio.utils import get_function_description
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import expect
from timm.data import ImageNetInfo, create_transform, resolve_model_data_config

from demos.vision.image_classification import (
    class_names,
    classify_image,
    hub_repos,
    load_classifier,
    patch_view,
    timm_name,
)
from demos.vision.tab import DEMO
from hub.errors import HubError
from tests.image_samples import photo, write_bad_images, write_good_images


@pytest.fixture(scope="module")
def vit_dir(tiny_model_dir):
    return tiny_model_dir("image-classification")


@pytest.fixture(scope="module")
def classifier(vit_dir):
    return load_classifier(str(vit_dir))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify-images")
    return write_good_images(folder), write_bad_images(folder)


def timm_reference(vit_dir, image: Image.Image, top_k: int) -> dict[str, float]:
    """timm's documented recipe: create_model, the model's data config, create_transform, softmax, topk."""
    model = timm.create_model(f"local-dir:{vit_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    with torch.no_grad():
        probabilities = model(transform(image.convert("RGB")).unsqueeze(0))[0].softmax(-1)
    top = probabilities.topk(top_k)
    info = ImageNetInfo()
    return {info.index_to_description(i): p for p, i in zip(top.values.tolist(), top.indices.tolist())}


def test_top_k_equals_timms_recipe(classifier, vit_dir):
    ours = classify_image(classifier, photo(), top_k=5).probabilities
    reference = timm_reference(vit_dir, photo(), 5)
    assert list(ours) == list(reference)
    assert list(ours.values()) == pytest.approx(list(reference.values()), rel=1e-5)


def test_preprocessing_comes_from_the_models_data_config(classifier, vit_dir):
    assert classifier.data_config["input_size"] == (3, 32, 32)  # the tiny model's, not a hard-coded 224
    pixels = classifier.transform(photo())
    model = timm.create_model(f"local-dir:{vit_dir}", pretrained=True)
    expected = create_transform(**resolve_model_data_config(model), is_training=False)(photo())
    assert torch.equal(pixels, expected)
    assert classify_image(classifier, photo()).model_input.size == (32, 32)  # what the tab shows is what it saw


def test_class_names_are_readable_and_unique(classifier):
    assert classifier.labels[281] == "tabby, tabby cat"
    assert len(set(classifier.labels)) == 1000  # ImageNet's twin names ("crane", "maillot") are told apart


def test_a_head_without_imagenet_classes_gets_numbered_names():
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=3
    )
    assert class_names(model) == ["class 0", "class 1", "class 2"]


def test_patch_view_states_patches_and_sequence_length(classifier):
    view = patch_view(classifier, classify_image(classifier, photo()).model_input)
    assert "4x4 = **16 patches** of 8x8 pixels" in view.summary  # tiny ViT: 32 px input, 8 px patches
    assert "sequence of 17 tokens" in view.summary  # + the class token
    assert view.image.size == (448, 448)
    grid = view.image.getpixel((8 * 14, 5))  # a grid line every 8 input pixels (drawn 14x larger)
    assert grid == (255, 255, 0)


def test_top_k_is_checked(classifier):
    assert len(classify_image(classifier, photo(), top_k=20).probabilities) == 20
    for bad in (0, 21, float("nan"), 2.5, "5"):
        with pytest.raises(HubError, match="Top classes"):
            classify_image(classifier, photo(), top_k=bad)


def test_sources_map_to_timm_names_and_hub_repos(tmp_path):
    assert timm_name("vit_base_patch16_224.augreg2_in21k_ft_in1k") == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert (
        timm_name("timm/vit_small_patch16_224.augreg_in21k_ft_in1k")
        == "hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k"
    )
    assert timm_name(str(tmp_path)) == f"local-dir:{tmp_path}"
    assert hub_repos("vit_base_patch16_224.augreg2_in21k_ft_in1k") == [
        "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
    ]
    assert hub_repos(str(tmp_path)) == []


def test_a_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HubError, match="model.safetensors"):
        load_classifier(str(tmp_path))


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_classify_image_equals_timms_recipe(client, vit_dir, tmp_path):
    photo().save(tmp_path / "cat.png")
    label = client.predict(handle_file(str(tmp_path / "cat.png")), 3, api_name="/classify_image")
    reference = timm_reference(vit_dir, photo(), 3)
    assert label["label"] == next(iter(reference))
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert list(got) == list(reference)
    assert list(got.values()) == pytest.approx(list(reference.values()), rel=1e-5)


@pytest.mark.parametrize(
    "kind", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1x1", "wide", "tall", "WebP", "EXIF", "GIF"]
)
def test_api_every_kind_of_image_works(client, store, images, kind):
    path = images[0][kind]
    label = client.predict(handle_file(str(path)), api_name="/classify_image")
    expected = classify_image(store.get("image-classification"), str(path), 5).probabilities
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert list(got) == list(expected)
    assert list(got.values()) == pytest.approx(list(expected.values()), rel=1e-5)


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "text", "bomb", "huge bomb"])
def test_api_bad_files_get_a_message_and_the_server_keeps_serving(client, images, kind):
    path, message = images[1][kind]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), api_name="/classify_image")
    assert client.predict(handle_file(str(images[0]["RGB"])), api_name="/classify_image")["label"]


@pytest.mark.parametrize("top_k, message", [(0, "Top classes"), (1000, "Top classes"), ("many", "Top classes")])
def test_api_bad_top_k_gets_a_message(client, images, top_k, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(images[0]["RGB"])), top_k, api_name="/classify_image")


def test_api_without_an_image_gets_a_message(client):
    with pytest.raises(AppError, match="no image"):
        client.predict(None, api_name="/classify_image")


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_classifies_an_upload_and_shows_the_patches(page, hub_url, tmp_path):
    photo().save(tmp_path / "cat.png")
    page.goto(f"{hub_url}?tab=image-classification")
    page.locator("#image-classification-input input[type=file]").set_input_files(str(tmp_path / "cat.png"))
    page.locator("#image-classification-label .output-class").wait_for()
    page.locator("#image-classification-patches").get_by_text("16 patches").wait_for()


def test_browser_clicking_an_example_photo_classifies_it(page, hub_url):
    page.goto(f"{hub_url}?tab=image-classification")
    example = page.locator("#image-classification-examples img").first
    example.scroll_into_view_if_needed()
    example.click()
    page.locator("#image-classification-label .output-class").wait_for()
    expect(page.locator("#image-classification-patches")).to_contain_text("patches", timeout=60_000)


def test_browser_a_link_sets_top_k(page, hub_url, tmp_path):
    photo().save(tmp_path / "cat.png")
    page.goto(f"{hub_url}?tab=image-classification&top_k=3")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("number input for Top classes").input_value() == "3"
    page.locator("#image-classification-input input[type=file]").set_input_files(str(tmp_path / "cat.png"))
    expect(page.locator("#image-classification-label .confidence-set")).to_have_count(3, timeout=60_000)


def test_the_endpoint_describes_its_inputs_and_output(store):
    with gr.Blocks() as app:
        DEMO.tab(store)
    endpoint = next(fn.fn for fn in app.fns.values() if fn.api_name == "classify_image")
    description, parameters, returns = get_function_description(endpoint)
    parameters.pop("progress")  # Gradio's progress tracker, not an input
    assert description.startswith("Name what is in a photo")
    assert set(parameters) == {"image", "top_k"} and all(len(text) > 20 for text in parameters.values())
    assert "probability" in returns[0]
