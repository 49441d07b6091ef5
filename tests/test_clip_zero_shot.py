"""CLIP zero-shot: the core against open_clip's own recipe on the same saved weights, the label-set cache, then
/zero_shot, /zero_shot_matrix and the tab."""

import gradio as gr
import open_clip
import pytest
import torch
from gradio.utils import get_function_description
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from playwright.sync_api import expect

from demos.clip.tab import DEMO, example_label_sets
from demos.clip.zero_shot import (
    ENSEMBLE_TEMPLATES,
    MAX_LABELS,
    TextEmbeddingCache,
    heatmap,
    hub_repos,
    hub_weights,
    load_clip,
    matrix_table,
    open_clip_source,
    parse_labels,
    zero_shot,
)
from hub.errors import HubError
from tests.image_samples import bomb_png, halves, photo, write_bad_images, write_good_images

LABELS = ["a cat", "a dog", "a cup of coffee", "a rocket"]


@pytest.fixture(scope="module")
def clip_dir(tiny_model_dir):
    return tiny_model_dir("zero-shot")


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_clip(str(clip_dir))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero-shot-images")
    return write_good_images(folder), write_bad_images(folder)


def open_clip_reference(clip_dir, image: Image.Image, labels: list[str], templates: list[str]) -> list[float]:
    """open_clip's README recipe, written out: normalised features, the model's logit scale, softmax.
    With several templates each label's text embedding is the normalised mean of its normalised prompt embeddings."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_dir}")
    with torch.no_grad():
        image_features = model.encode_image(preprocess(image.convert("RGB")).unsqueeze(0))
        image_features /= image_features.norm(dim=-1, keepdim=True)
        text_features = []
        for label in labels:
            prompts = model.encode_text(tokenizer([template.format(label) for template in templates]))
            prompts /= prompts.norm(dim=-1, keepdim=True)
            mean = prompts.mean(dim=0)
            text_features.append(mean / mean.norm())
        text_features = torch.stack(text_features)
        return (model.logit_scale.exp() * image_features @ text_features.T).softmax(dim=-1)[0].tolist()


def test_probabilities_equal_open_clips_recipe(clip, clip_dir):
    result = zero_shot(clip, [photo()], ", ".join(LABELS), "a photo of {}.")
    reference = open_clip_reference(clip_dir, photo(), LABELS, ["a photo of {}."])
    assert result.labels == LABELS
    assert list(result.probabilities[0].values()) == pytest.approx(reference, rel=1e-4)


def test_template_ensemble_equals_open_clips_recipe(clip, clip_dir):
    result = zero_shot(clip, [photo()], LABELS, "a photo of {}.", ensemble=True)
    templates = ["a photo of {}.", *ENSEMBLE_TEMPLATES]
    reference = open_clip_reference(clip_dir, photo(), LABELS, templates)
    assert list(result.probabilities[0].values()) == pytest.approx(reference, rel=1e-4)
    plain = zero_shot(clip, [photo()], LABELS, "a photo of {}.")
    assert result.probabilities != plain.probabilities


def test_several_images_give_one_row_each(clip, clip_dir):
    pictures = [photo(), halves()]
    result = zero_shot(clip, pictures, LABELS)
    for picture, row in zip(pictures, result.probabilities):
        assert list(row.values()) == pytest.approx(
            open_clip_reference(clip_dir, picture, LABELS, ["a photo of a {}."]), rel=1e-4
        )
    assert result.probabilities[0] != result.probabilities[1]
    assert len(result.similarities) == 2 and all(-1 <= s <= 1 for row in result.similarities for s in row)


def test_a_repeated_label_set_is_not_encoded_again(clip):
    before = clip.text_cache.encodings
    zero_shot(clip, [photo()], "an owl, a bat, a moth")
    zero_shot(clip, [halves()], "an owl, a bat, a moth")  # only the image changed
    zero_shot(clip, [photo()], " an owl ,a bat\na moth ")  # same labels, written differently
    assert clip.text_cache.encodings == before + 1
    zero_shot(clip, [photo()], "an owl, a bat")
    zero_shot(clip, [photo()], "an owl, a bat, a moth", ensemble=True)  # other templates: other embeddings
    assert clip.text_cache.encodings == before + 3


def test_the_cache_is_bounded_and_drops_the_least_recently_used():
    cache = TextEmbeddingCache(size=2)
    cache.put(("a",), torch.zeros(1))
    cache.put(("b",), torch.zeros(1))
    cache.get(("a",))
    cache.put(("c",), torch.zeros(1))
    assert len(cache) == 2 and cache.get(("b",)) is None and cache.get(("a",)) is not None


def test_labels_are_trimmed_deduplicated_and_capped():
    assert parse_labels(" a cat ,a dog,\n\nA Cat, a  dog ,, ") == ["a cat", "a dog"]
    assert len(parse_labels(", ".join(f"label {i}" for i in range(MAX_LABELS)))) == MAX_LABELS
    with pytest.raises(HubError, match="Too many labels"):
        parse_labels(", ".join(f"label {i}" for i in range(MAX_LABELS + 1)))
    for empty in ("", "  ", ", ,\n,", None):
        with pytest.raises(HubError, match="No labels|empty"):
            parse_labels(empty)


def test_a_label_longer_than_the_text_context_is_truncated(clip, clip_dir):
    long_label = "a very " * 50 + "long label"  # far beyond the tiny model's 16-token context
    result = zero_shot(clip, [photo()], ["a cat", long_label])
    assert result.labels == ["a cat", long_label]
    assert sum(result.probabilities[0].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("template", ["a photo", "{} and {}", "a {0} photo {}", "{x}", ""])
def test_bad_templates_are_refused(clip, template):
    with pytest.raises(HubError, match="template"):
        zero_shot(clip, [photo()], LABELS, template)


def test_sources_map_to_open_clip_names_and_hub_repos(tmp_path):
    assert open_clip_source("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert open_clip_source("laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == (
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        None,
    )
    assert open_clip_source(str(tmp_path)) == (f"local-dir:{tmp_path}", None)
    assert hub_repos("ViT-B-32/laion2b_s34b_b79k") == ["laion/CLIP-ViT-B-32-laion2B-s34B-b79K"]
    with pytest.raises(HubError, match="pretrained tag"):
        open_clip_source("ViT-B-32")


def test_hub_sources_are_loaded_from_safetensors_only():
    assert hub_weights("ViT-B-32", "laion2b_s34b_b79k") == (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "open_clip_model.safetensors",
    )
    assert hub_weights("hf-hub:org/repo", None) == ("org/repo", "open_clip_model.safetensors")
    with pytest.raises(HubError, match="knows no weights"):
        hub_weights("ViT-B-32", "no_such_tag")


def test_a_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(HubError, match="safetensors"):
        load_clip(str(tmp_path))


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_zero_shot_equals_open_clips_recipe(client, clip_dir, tmp_path):
    photo().save(tmp_path / "cat.png")
    label = client.predict(handle_file(str(tmp_path / "cat.png")), "a cat, a dog, a rocket", api_name="/zero_shot")
    reference = open_clip_reference(clip_dir, photo(), ["a cat", "a dog", "a rocket"], ["a photo of a {}."])
    got = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert got == pytest.approx(dict(zip(["a cat", "a dog", "a rocket"], reference)), rel=1e-4)


def test_api_changing_only_the_image_reuses_the_label_embeddings(client, store, images):
    client.predict(handle_file(str(images[0]["RGB"])), "a lamp, a chair, a table", api_name="/zero_shot")
    encodings = store.get("zero-shot").text_cache.encodings
    client.predict(handle_file(str(images[0]["L"])), "a lamp, a chair, a table", api_name="/zero_shot")
    assert store.get("zero-shot").text_cache.encodings == encodings


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P", "CMYK", "I;16", "1x1", "wide", "EXIF", "GIF"])
def test_api_every_kind_of_image_works(client, store, images, kind):
    path = images[0][kind]
    label = client.predict(handle_file(str(path)), "a cat, a dog", api_name="/zero_shot")
    expected = zero_shot(store.get("zero-shot"), [str(path)], "a cat, a dog").probabilities[0]
    assert {c["label"]: c["confidence"] for c in label["confidences"]} == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "bomb", "huge bomb"])
def test_api_bad_files_get_a_message_and_the_server_keeps_serving(client, images, kind):
    path, message = images[1][kind]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), "a cat, a dog", api_name="/zero_shot")
    assert client.predict(handle_file(str(images[0]["RGB"])), "a cat, a dog", api_name="/zero_shot")["label"]


@pytest.mark.parametrize(
    "args, message",
    [
        ((", , \n",), "No labels"),
        ((", ".join(f"l{i}" for i in range(MAX_LABELS + 1)),), "Too many labels"),
        (("x" * 1_000_000,), "too long"),
        (("a cat", "no placeholder"), "template"),
        (("a cat", "a photo of a {}.", "yes"), "Ensemble"),
    ],
)
def test_api_bad_labels_and_settings_get_a_message(client, images, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(images[0]["RGB"])), *args, api_name="/zero_shot")


def test_api_matrix_compares_many_images(client, store, images):
    paths = [str(images[0][kind]) for kind in ("RGB", "EXIF", "GIF")]
    table = client.predict([handle_file(p) for p in paths], "a cat, a dog, a rocket", api_name="/zero_shot_matrix")
    assert table["headers"] == ["image", "a cat", "a dog", "a rocket"]
    expected = zero_shot(store.get("zero-shot"), paths, "a cat, a dog, a rocket").probabilities
    for row, probabilities in zip(table["data"], expected):
        assert row[1:] == pytest.approx(list(probabilities.values()), abs=1e-4)  # the table rounds to 4 places
    assert [row[0] for row in table["data"]] == ["1. rgb.jpg", "2. exif_rotated.jpg", "3. animated.gif"]


def test_api_matrix_refuses_a_bad_file_by_number(client, images):
    files = [handle_file(str(images[0]["RGB"])), handle_file(str(images[1]["random bytes"][0]))]
    with pytest.raises(AppError, match="Image 2 is not an image"):
        client.predict(files, "a cat, a dog", api_name="/zero_shot_matrix")


def test_api_matrix_bounds_the_pixels_of_one_request_not_only_of_each_image(client, images, tmp_path):
    large = tmp_path / "large.png"
    large.write_bytes(bomb_png(8_000, 5_000))  # 40 Mpx: fine alone, too much three times in one request
    with pytest.raises(AppError, match="120 megapixels together"):
        client.predict([handle_file(str(large))] * 3, "a cat, a dog", api_name="/zero_shot_matrix")
    assert client.predict([handle_file(str(images[0]["RGB"]))], "a cat, a dog", api_name="/zero_shot_matrix")


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_matches_an_upload_with_the_labels(page, hub_url, tmp_path):
    photo().save(tmp_path / "cat.png")
    page.goto(f"{hub_url}?tab=zero-shot")
    page.locator("#zero-shot-input input[type=file]").set_input_files(str(tmp_path / "cat.png"))
    page.locator("#zero-shot-label .output-class").wait_for()
    page.get_by_text("Compare many images with the labels").click()
    page.locator("#zero-shot-files input[type=file]").set_input_files(
        [str(tmp_path / "cat.png"), str(tmp_path / "cat.png")]
    )
    page.get_by_role("button", name="Compare the images", exact=True).click()
    # the Dataframe keeps a hidden copy of its table: read what is shown
    expect(page.locator("#zero-shot-matrix")).to_contain_text("2. cat.png", use_inner_text=True, timeout=60_000)


def test_browser_clicking_an_example_matches_its_labels(page, hub_url):
    page.goto(f"{hub_url}?tab=zero-shot")
    example = page.locator("#zero-shot-examples img").first
    example.scroll_into_view_if_needed()
    example.click()
    labels = parse_labels(next(iter(example_label_sets().values())))
    expect(page.get_by_label("Labels (comma or newline separated)")).to_have_value(
        next(iter(example_label_sets().values()))
    )
    expect(page.locator("#zero-shot-label .confidence-set")).to_have_count(len(labels), timeout=60_000)
    assert page.locator("#zero-shot-label .output-class").inner_text() in labels


def test_browser_a_link_sets_the_labels_template_and_ensemble(page, hub_url):
    page.goto(f"{hub_url}?tab=zero-shot&labels=a%20cat,%20a%20rocket&template=art%20of%20{{}}&ensemble=1")
    page.wait_for_function("() => window.hubLinkRead === true")
    assert page.get_by_label("Labels (comma or newline separated)").input_value() == "a cat, a rocket"
    assert page.get_by_label("Prompt template ({} is the label)").input_value() == "art of {}"
    assert page.get_by_label("Ensemble", exact=False).is_checked()


def test_the_matrix_shows_percent_and_returns_fractions(clip):
    result = zero_shot(clip, [photo(), halves()], LABELS)
    styled = heatmap(matrix_table(result, ["1. a.png", "2. b.png"]))
    assert styled.data.iloc[0, 1] == round(result.probabilities[0][LABELS[0]], 4)  # the API's number: a fraction
    shown = styled.to_html()
    assert f"{result.probabilities[0][LABELS[0]]:.1%}" in shown  # the page's: percent


def test_the_endpoints_describe_their_inputs_and_output(store):
    with gr.Blocks() as app:
        DEMO.tab(store)
    for api_name, first in (("zero_shot", "image"), ("zero_shot_matrix", "files")):
        endpoint = next(fn.fn for fn in app.fns.values() if fn.api_name == api_name)
        description, parameters, returns = get_function_description(endpoint)
        parameters.pop("progress")  # Gradio's progress tracker, not an input
        assert len(description) > 30
        assert set(parameters) == {first, "labels", "template", "ensemble"}
        assert all(len(text) > 20 for text in parameters.values()) and "probability" in returns[0]
