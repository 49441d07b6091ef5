"""Where each label matches (CLIP relevance, Chefer et al. 2021): the maps against an independent computation on a
separate copy of the saved tiny CLIP, the view that shares the loaded weights and leaves /zero_shot alone, every
kind of image, the Code accordion, /clip_relevance over the API and REST, and the section in a real browser."""

import contextlib
import io
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from torchvision.transforms import Compose, Normalize

from demos.clip.relevance import (
    check_encoder,
    clip_relevance,
    label_relevance,
    model_input_picture,
    relevance_code,
    relevance_figure,
    shared_relevance_view,
)
from demos.clip.zero_shot import zero_shot
from hub.errors import HubError
from tests.image_samples import photo, write_bad_images, write_good_images

from .rest import error_message, rest_call, upload

LABELS = ["a cat", "a dog", "a cup of coffee", "a rocket"]
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def clip(store):
    """The tiny CLIP the hub loaded: the very model /zero_shot uses."""
    return store.get("zero-shot")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip-relevance-images")
    return write_good_images(folder), write_bad_images(folder)


def independent_relevance(folder: str, picture: Image.Image, label: str, template: str = TEMPLATE) -> torch.Tensor:
    """Chefer et al.'s CLIP recipe on a separately loaded copy whose attention is written out by hand (q·k, softmax),
    keeping each softmax for its gradient: R = I, then per layer R += mean over heads of (grad * attention)+ @ R."""
    model, _, preprocess = open_clip.create_model_and_transforms(folder)
    model.eval()
    tokenizer = open_clip.get_tokenizer(folder)
    kept = []

    def attention_written_out(block):
        def attention(q_x, k_x=None, v_x=None, attn_mask=None):
            n, tokens, width = q_x.shape
            heads = block.attn.num_heads
            q, k, v = F.linear(q_x, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
            q, k, v = (t.reshape(n, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
            weights = (q @ k.transpose(-1, -2) / math.sqrt(width // heads)).softmax(dim=-1)
            weights.retain_grad()
            kept.append(weights)
            return block.attn.out_proj((weights @ v).transpose(1, 2).reshape(n, tokens, width))

        return attention

    for block in model.visual.transformer.resblocks:
        block.attention = attention_written_out(block)
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer([template.format(label)])), dim=-1)[0]
    image = F.normalize(model.encode_image(preprocess(picture.convert("RGB")).unsqueeze(0)), dim=-1)[0]
    (model.logit_scale.exp() * image @ text).backward()
    relevance = torch.eye(kept[0].shape[-1])
    for weights in kept:
        relevance = relevance + (weights.grad * weights)[0].clamp(min=0).mean(dim=0) @ relevance
    return relevance[0, 1:]


def test_each_map_equals_an_independent_computation(clip):
    result = label_relevance(clip, photo(), LABELS)
    assert sorted(result.labels) == sorted(LABELS)
    for label, relevance in zip(result.labels, result.relevance):
        expected = independent_relevance(clip.model_name, photo(), label).reshape(relevance.shape)
        torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-6)


def test_maps_are_non_negative_cover_the_patch_grid_and_differ_between_labels(clip):
    result = label_relevance(clip, photo(), LABELS)
    rows, cols = clip.model.visual.grid_size
    assert result.grid == (rows, cols) and result.relevance.shape == (len(LABELS), rows, cols)
    assert (result.relevance >= 0).all() and (result.relevance.flatten(1).sum(1) > 0).all()
    assert not torch.allclose(result.relevance[0], result.relevance[1])


def test_labels_come_most_probable_first_with_the_zero_shot_probabilities(clip):
    result = label_relevance(clip, photo(), LABELS)
    expected = zero_shot(clip, [photo()], LABELS).probabilities[0]
    assert result.probabilities == sorted(result.probabilities, reverse=True)
    assert dict(zip(result.labels, result.probabilities)) == pytest.approx(expected, rel=1e-5)
    assert len(label_relevance(clip, photo(), LABELS, max_maps=2).labels) == 2


def test_a_labels_map_is_the_same_alone_or_among_others(clip):
    among_others = label_relevance(clip, photo(), LABELS)
    alone = clip_relevance(clip, photo(), " a   dog ")
    assert alone["grid"] == list(among_others.grid)
    expected = among_others.relevance[among_others.labels.index("a dog")].flatten()
    torch.testing.assert_close(torch.tensor(alone["relevance"]), expected, rtol=1e-4, atol=1e-7)


def test_the_template_changes_the_text_embedding_used(clip):
    plain = clip_relevance(clip, photo(), "a cat")["relevance"]
    drawing = clip_relevance(clip, photo(), "a cat", "a drawing of {}")["relevance"]
    expected = independent_relevance(clip.model_name, photo(), "a cat", "a drawing of {}")
    torch.testing.assert_close(torch.tensor(drawing), expected, rtol=1e-4, atol=1e-6)
    assert drawing != pytest.approx(plain)


def test_the_view_shares_the_weights_and_leaves_the_loaded_model_alone(clip):
    before = zero_shot(clip, [photo()], LABELS).probabilities
    view = shared_relevance_view(clip)
    assert shared_relevance_view(clip) is view  # made once per loaded model
    loaded = dict(clip.model.visual.named_parameters())
    shared = dict(view.encoder.named_parameters())
    assert loaded.keys() == shared.keys()
    assert all(shared[name].data_ptr() == tensor.data_ptr() for name, tensor in loaded.items())
    for _ in range(2):
        label_relevance(clip, photo(), LABELS)
    assert zero_shot(clip, [photo()], LABELS).probabilities == before  # exactly the same numbers
    assert all(p.grad is None for p in clip.model.parameters())  # no gradient landed on the shared weights
    assert all("attention" not in vars(block) for block in clip.model.visual.transformer.resblocks)
    assert all("attention_weights" not in vars(block) for block in view.encoder.transformer.resblocks)


def test_an_image_encoder_without_a_class_token_is_refused():
    with pytest.raises(HubError, match="class token"):
        check_encoder(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "kind", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1x1", "wide", "tall", "WebP", "EXIF", "GIF"]
)
def test_every_kind_of_image_gets_a_map(clip, images, kind):
    answer = clip_relevance(clip, str(images[0][kind]), "a cat")
    rows, cols = answer["grid"]
    assert len(answer["relevance"]) == rows * cols and min(answer["relevance"]) >= 0
    assert all(math.isfinite(value) for value in answer["relevance"])


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "text", "bomb", "huge bomb"])
def test_broken_files_get_the_same_message_as_zero_shot(clip, images, kind):
    path, message = images[1][kind]
    with pytest.raises(HubError, match=message) as relevance_error:
        clip_relevance(clip, str(path), "a cat")
    with pytest.raises(HubError) as zero_shot_error:
        zero_shot(clip, [str(path)], "a cat")
    assert str(relevance_error.value) == str(zero_shot_error.value)


@pytest.mark.parametrize(
    "label, message",
    [
        ("", "Label is empty"),
        (" \n ", "Label is empty"),
        (None, "Label is empty"),
        (5, "Label must be text"),
        (["a cat"], "Label must be text"),
        ("a cat, a dog", "one label at a time"),
        (",", "No labels"),
        ("x" * 20_000, "too long"),
        ("a \ud800 cat", "not valid Unicode"),
    ],
)
def test_bad_labels_are_refused_with_a_message(clip, label, message):
    with pytest.raises(HubError, match=message):
        clip_relevance(clip, photo(), label)


def test_the_code_accordion_reproduces_the_maps(clip, store, tmp_path):
    photo().save(tmp_path / "cat.png")
    result = label_relevance(clip, str(tmp_path / "cat.png"), LABELS)
    code = relevance_code(clip, result, store.dtype).replace('"photo.jpg"', repr(str(tmp_path / "cat.png")))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, scope)
    for label, relevance in zip(result.labels, result.relevance):
        torch.testing.assert_close(scope["relevance"][label], relevance, rtol=1e-4, atol=1e-6)


def test_the_figure_shows_the_models_input_with_the_normalisation_undone(clip):
    result = label_relevance(clip, photo(), LABELS)
    unnormalised = Compose(clip.preprocess.transforms[:-1])(photo())  # resize, crop, to tensor; no Normalize
    assert isinstance(clip.preprocess.transforms[-1], Normalize)
    torch.testing.assert_close(
        torch.from_numpy(model_input_picture(clip, result.pixels)), unnormalised.permute(1, 2, 0)
    )
    assert (
        relevance_figure(clip, result).size[0]
        > 2 * relevance_figure(clip, label_relevance(clip, photo(), "a cat")).size[0]
    )


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_relevance_equals_the_core(client, clip, tmp_path):
    photo().save(tmp_path / "cat.png")
    answer = client.predict(handle_file(str(tmp_path / "cat.png")), "a rocket", api_name="/clip_relevance")
    expected = clip_relevance(clip, photo(), "a rocket")
    assert answer["grid"] == expected["grid"]
    assert answer["relevance"] == pytest.approx(expected["relevance"], rel=1e-5, abs=1e-8)
    answer = client.predict(
        handle_file(str(tmp_path / "cat.png")), "a rocket", "art of {}", True, api_name="/clip_relevance"
    )
    assert answer["relevance"] == pytest.approx(
        clip_relevance(clip, photo(), "a rocket", "art of {}", True)["relevance"]
    )


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "bomb"])
def test_api_broken_files_get_a_message_and_the_server_keeps_serving(client, images, kind):
    path, message = images[1][kind]
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(path)), "a cat", api_name="/clip_relevance")
    assert client.predict(handle_file(str(images[0]["RGB"])), "a cat", api_name="/clip_relevance")["grid"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("a cat, a dog",), "one label at a time"),
        (("",), "Label is empty"),
        (("a cat", "no placeholder"), "template"),
        (("a cat", TEMPLATE, "yes"), "Ensemble"),
    ],
)
def test_api_bad_labels_and_settings_get_a_message(client, images, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(images[0]["RGB"])), *args, api_name="/clip_relevance")


def test_rest_wrong_types_nan_and_server_paths_get_a_message(hub_url, images):
    image = upload(hub_url, images[0]["RGB"])
    cases = [
        ([image, float("nan")], "Label must be text"),
        ([image, 5], "Label must be text"),
        ([image, "a cat", None], "Prompt template is empty"),
        ([image, "a cat", TEMPLATE, float("nan")], "Ensemble must be true or false"),
        ([None, "a cat"], "uploaded image file"),
        ([5, "a cat"], "uploaded image file"),
        ([str(images[0]["RGB"]), "a cat"], "uploaded image file"),  # a path on the server is never read
        ([{"path": str(images[0]["RGB"])}, "a cat"], "uploaded image file"),
    ]
    for data, message in cases:
        data += [TEMPLATE, False][len(data) - 2 :]  # every input given, as the REST route needs
        assert message in error_message(rest_call(hub_url, "clip_relevance", data)), data
    assert "event: complete" in rest_call(hub_url, "clip_relevance", [image, "a cat", TEMPLATE, False])


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_shows_where_each_label_matches(page, hub_url, tmp_path):
    photo().save(tmp_path / "cat.png")
    page.goto(f"{hub_url}?tab=zero-shot&present=1")  # presenter mode keeps the Download buttons
    page.locator("#zero-shot-input input[type=file]").set_input_files(str(tmp_path / "cat.png"))
    page.locator("#zero-shot-label .output-class").wait_for()
    opener = page.get_by_text("Where each label matches", exact=True)
    opener.scroll_into_view_if_needed()
    opener.click()
    button = page.get_by_role("button", name="Show where each label matches")
    button.scroll_into_view_if_needed()
    button.click()
    figure = page.locator("#clip-relevance-figure img")
    figure.wait_for()
    assert figure.get_attribute("src")
    link = page.locator("#clip-relevance-figure a[data-testid=download-link]")
    assert link.locator("button[aria-label=Download]").is_visible()
    png = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
    assert png.format == "PNG" and png.width >= 700  # drawn at SLIDE_DPI
