"""Where ViT looks: rollout, one layer and head, and the position embeddings, against timm's own attention on the same
saved tiny ViT; then /vit_attention and /vit_position_similarity over HTTP, and the section in the browser."""

import contextlib
import dataclasses
import io
import threading

import numpy as np
import pytest
import timm
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from timm.utils import AttentionExtract

from demos.vision import tab as vision_tab
from demos.vision.image_classification import DEMO_ID, build_tiny_vit, classify_image, configured_layers_and_heads
from demos.vision.vit_attention import (
    attention_reader,
    attention_row,
    overlay,
    patch_at,
    position_similarity,
    read_attention,
    reproduce_code,
    similarity_figure,
    vit_attention,
)
from hub.app import build_app
from hub.errors import HubError
from hub.models import ModelStore
from tests.image_samples import halves, photo, write_bad_images, write_good_images
from tests.rest import rest_call, upload


@pytest.fixture(scope="module")
def classifier(store):
    return store.get(DEMO_ID)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit-attention-images")
    return write_good_images(folder), write_bad_images(folder)


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit-attention-cat") / "cat.png"
    photo().save(path)
    return path


def timm_attentions(classifier, image) -> list[np.ndarray]:
    """timm's own attention maps: the saved model loaded afresh, fused attention off, AttentionExtract's hooks."""
    model = timm.create_model(classifier.timm_name, pretrained=True).eval()
    for block in model.blocks:
        block.attn.fused_attn = False
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    with torch.no_grad():
        maps = AttentionExtract(model, method="hook")(transform(image.convert("RGB")).unsqueeze(0))
    return [m[0].double().numpy() for m in maps.values()]


def rollout_by_hand(attentions: list[np.ndarray]) -> np.ndarray:
    result = np.eye(attentions[0].shape[-1])
    for layer in attentions:
        a = layer.mean(axis=0) + np.eye(len(result))
        a /= a.sum(axis=1, keepdims=True)
        result = a @ result
    return result


def test_rollout_equals_timms_attention_rolled_out_by_hand(classifier):
    expected = rollout_by_hand(timm_attentions(classifier, photo()))[0, 1:]  # the class token over the 16 patches
    answer = vit_attention(classifier, photo())
    assert answer["grid"] == [4, 4] and (answer["layer"], answer["head"]) == (0, 0)
    np.testing.assert_allclose(answer["weights"], expected, atol=1e-6)


def test_every_layer_head_and_query_is_timms_own_map(classifier):
    reference = timm_attentions(classifier, photo())
    maps = read_attention(classifier, photo())
    np.testing.assert_allclose(maps.weights, np.stack(reference), atol=1e-6)
    np.testing.assert_allclose(vit_attention(classifier, photo(), 2, 1)["weights"], reference[1][0, 0, 1:], atol=1e-6)
    np.testing.assert_allclose(
        vit_attention(classifier, photo(), 1, 0)["weights"], reference[0].mean(axis=0)[0, 1:], atol=1e-6
    )
    patch_7 = 1 + 6  # after the class token
    np.testing.assert_allclose(attention_row(maps, 2, 2, 7), reference[1][1, patch_7], atol=1e-6)
    np.testing.assert_allclose(attention_row(maps, 0, 0, 7), rollout_by_hand(reference)[patch_7], atol=1e-6)


def test_a_map_is_the_softmax_of_the_blocks_own_queries_and_keys(classifier):
    """Independent of any hook on the softmax: q·k / sqrt(d) from the fused model's own projections, then softmax."""
    model = classifier.model
    seen = {}
    handle = model.blocks[1].attn.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        model(classifier.transform(photo()).unsqueeze(0))
        handle.remove()
        attn = model.blocks[1].attn
        q, k, _ = attn.qkv(seen["x"]).reshape(1, 17, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        softmax = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)[0]
    for head in (1, 2):
        ours = vit_attention(classifier, photo(), 2, head)["weights"]
        np.testing.assert_allclose(ours, softmax[head - 1, 0, 1:].numpy(), atol=1e-6)


def test_weights_are_probabilities_and_class_rows_sum_to_one_before_the_prefix_is_dropped(classifier):
    maps = read_attention(classifier, photo())
    assert np.isfinite(maps.weights).all() and (maps.weights >= 0).all()
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1, atol=1e-5)
    for layer, head in [(0, 0), (1, 0), (1, 1), (2, 2)]:
        row = attention_row(maps, layer, head)
        assert np.isfinite(row).all() and (row >= 0).all()
        assert row.sum() == pytest.approx(1, abs=1e-5)
        assert 0 < row[1:].sum() < 1  # the class token keeps a share: the patches' weights alone do not sum to 1


def test_position_similarity_is_the_cosine_of_the_learned_table(classifier):
    grid, similarity = position_similarity(classifier.model)
    table = classifier.model.pos_embed[0, 1:].detach().double()  # row 0 is the class token's position
    expected = torch.nn.functional.cosine_similarity(table[:, None], table[None, :], dim=-1).numpy()
    assert grid == (4, 4)
    np.testing.assert_allclose(similarity, expected, atol=1e-12)
    np.testing.assert_allclose(np.diag(similarity), 1, atol=1e-12)


def test_position_similarity_without_class_position_reads_the_whole_table():
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, no_embed_class=True
    )
    grid, similarity = position_similarity(model)
    assert model.pos_embed.shape[1] == 16 and similarity.shape == (16, 16)
    table = model.pos_embed[0].detach().double()
    np.testing.assert_allclose(similarity[3, 5], float(torch.cosine_similarity(table[3], table[5], dim=0)), atol=1e-12)


def test_a_model_without_a_class_token_is_refused_with_a_message():
    model = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        class_token=False,
        global_pool="avg",
    )
    with pytest.raises(HubError, match="class token, and the loaded model has none"):
        attention_reader(model)


def test_the_view_shares_the_weights_and_the_loaded_model_stays_fused(classifier):
    reader = attention_reader(classifier.model)
    assert reader is attention_reader(classifier.model)  # made once per loaded model
    pairs = list(zip(classifier.model.state_dict().values(), reader.model.state_dict().values(), strict=True))
    assert all(a.data_ptr() == b.data_ptr() for a, b in pairs)
    assert all(block.attn.fused_attn == timm.layers.use_fused_attn() for block in classifier.model.blocks)
    assert not any(block.attn.fused_attn for block in reader.model.blocks)
    assert not classifier.model.blocks[0].attn.attn_drop._forward_hooks  # the hooks live on the view only
    pixels = classifier.transform(photo()).unsqueeze(0)
    with torch.no_grad():
        fused = classifier.model(pixels)
    torch.testing.assert_close(reader(pixels)[0], fused, atol=1e-5, rtol=1e-5)


def test_concurrent_requests_each_get_their_own_maps(classifier):
    pictures = [photo(), halves((64, 64)), photo().rotate(90, expand=True), halves((64, 64)).transpose(0)]
    expected = [vit_attention(classifier, picture, 2, 1)["weights"] for picture in pictures]
    assert len({tuple(w) for w in expected}) == 4  # four different answers, so a mix-up would show
    wrong = []

    def ask(i: int) -> None:
        for _ in range(15):
            if vit_attention(classifier, pictures[i], 2, 1)["weights"] != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


@pytest.mark.parametrize(
    "kind", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1x1", "wide", "tall", "WebP", "EXIF", "GIF"]
)
def test_every_image_the_tab_accepts_gets_a_map(classifier, images, kind):
    weights = np.array(vit_attention(classifier, str(images[0][kind]))["weights"])
    assert weights.shape == (16,) and np.isfinite(weights).all() and 0 < weights.sum() < 1


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "text", "bomb", "huge bomb"])
def test_a_broken_file_gets_the_same_message_as_classification(classifier, images, kind):
    path, words = images[1][kind]
    with pytest.raises(HubError, match=words) as ours:
        vit_attention(classifier, str(path))
    with pytest.raises(HubError) as classification:
        classify_image(classifier, str(path))
    assert str(ours.value) == str(classification.value)


@pytest.mark.parametrize(
    "layer, head, message",
    [
        (3, 0, "Layer"),
        (-1, 0, "Layer"),
        (float("nan"), 0, "Layer"),
        ("2", 0, "Layer"),
        (1.5, 0, "whole number"),
        (1, 3, "Head"),
        (1, None, "Head"),
        (0, 1, "rollout"),
    ],
)
def test_bad_layers_and_heads_are_refused_with_a_message(classifier, layer, head, message):
    with pytest.raises(HubError, match=message):
        vit_attention(classifier, photo(), layer, head)


@pytest.mark.parametrize("layer, head, query", [(0, 0, 0), (2, 1, 0), (1, 0, 6), (0, 0, 16)])
def test_the_code_accordion_reproduces_the_numbers(classifier, store, cat, layer, head, query):
    code = reproduce_code(classifier, layer, head, query, store.dtype).replace('"photo.jpg"', repr(str(cat)))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(code, scope)
    maps = read_attention(classifier, str(cat))
    np.testing.assert_allclose(scope["weights"].flatten(), attention_row(maps, layer, head, query)[1:], atol=1e-6)
    np.testing.assert_allclose(scope["similarity"].numpy(), position_similarity(classifier.model)[1], atol=1e-12)


def test_a_click_on_the_overlay_picks_the_patch_drawn_there(classifier):
    maps = read_attention(classifier, photo())
    shown = overlay(maps, attention_row(maps, 0, 0, 7)[1:], query=7)
    assert shown.size == (448, 448)  # 32 px drawn 14x larger: each 8 px patch is 112 px wide
    assert shown.getpixel((112 * 2 + 1, 112 * 1 + 50)) == (0, 255, 255)  # patch 7 = row 2, column 3: outlined
    assert patch_at(classifier, 112 * 2 + 50, 112 * 1 + 50) == 7
    assert patch_at(classifier, 0, 0) == 1 and patch_at(classifier, 447, 447) == 16


# --- through the HTTP API -----------------------------------------------------------------------------------


def test_api_vit_attention_defaults_and_numbers(client, classifier, cat):
    answer = client.predict(handle_file(str(cat)), api_name="/vit_attention")
    assert answer == vit_attention(classifier, str(cat))
    answer = client.predict(handle_file(str(cat)), 2, 2, api_name="/vit_attention")
    assert (answer["layer"], answer["head"]) == (2, 2)
    np.testing.assert_allclose(answer["weights"], vit_attention(classifier, str(cat), 2, 2)["weights"], atol=1e-7)


def test_api_vit_position_similarity(client, classifier):
    answer = client.predict(api_name="/vit_position_similarity")
    grid, similarity = position_similarity(classifier.model)
    assert answer["grid"] == list(grid)
    np.testing.assert_allclose(answer["similarity"], similarity, atol=1e-12)


@pytest.mark.parametrize("kind", ["RGBA", "I;16", "1x1", "wide"])
def test_api_accepts_every_kind_of_image(client, classifier, images, kind):
    path = str(images[0][kind])
    assert client.predict(handle_file(path), api_name="/vit_attention") == vit_attention(classifier, path)


@pytest.mark.parametrize(
    "args, message",
    [
        ((None,), "no image"),
        (("cat", 9), "Layer"),
        (("cat", 1, "two"), "Head"),
        (("cat", 0, 2), "rollout"),
        (("truncated",), "truncated or damaged"),
        (("random bytes",), "not an image"),
    ],
)
def test_api_bad_input_gets_a_message_and_the_server_keeps_serving(client, images, cat, args, message):
    files = {"cat": cat, **{kind: path for kind, (path, _) in images[1].items()}}
    first = handle_file(str(files[args[0]])) if args[0] else None
    with pytest.raises(AppError, match=message):
        client.predict(first, *args[1:], api_name="/vit_attention")
    assert client.predict(handle_file(str(cat)), api_name="/vit_attention")["grid"] == [4, 4]


@pytest.mark.parametrize(
    "data, message",
    [
        ([None, 0, 0], "no image"),
        ([42, 0, 0], "must be an uploaded image file"),
        ([["a"], 0, 0], "must be an uploaded image file"),
        # a path on the server that the caller names is never opened, as a string or as file data
        (["/etc/hostname", 0, 0], "must be an uploaded image file"),
        ([{"path": "/etc/hostname"}, 0, 0], "must be an uploaded image file"),
        ([{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}, 0, 0], "cannot read"),
    ],
)
def test_rest_wrong_types_get_a_message(hub_url, data, message):
    answer = rest_call(hub_url, "vit_attention", data)
    assert "event: error" in answer and message in answer


@pytest.mark.parametrize(
    "layer, head, message", [(float("nan"), 0, "Layer"), ("1", 0, "Layer"), (1, float("inf"), "Head")]
)
def test_rest_non_finite_and_wrong_types_for_layer_and_head(hub_url, cat, layer, head, message):
    answer = rest_call(hub_url, "vit_attention", [upload(hub_url, cat), layer, head])
    assert "event: error" in answer and message in answer


# --- in a real browser --------------------------------------------------------------------------------------


def test_browser_shows_the_rollout_over_an_upload_and_a_click_picks_a_patch(page, hub_url, cat):
    page.goto(f"{hub_url}?tab=image-classification&present=1")  # presenter mode keeps the Download buttons
    page.locator("#image-classification-input input[type=file]").set_input_files(str(cat))
    shown = page.locator("#vit-attention-overlay img")
    shown.scroll_into_view_if_needed()
    shown.wait_for(state="visible")
    assert shown.get_attribute("src")
    summary = page.locator("#vit-attention-summary")
    summary.get_by_text("The class token after rolling attention out").wait_for()
    box = shown.bounding_box()
    shown.click(position={"x": box["width"] * 0.9, "y": box["height"] * 0.1})  # top right: patch 4
    summary.get_by_text("Patch 4").wait_for()
    for figure, width in (
        ("vit-attention-grid", 600),
        ("vit-position-similarity", 900),
        ("vit-attention-overlay", 448),
    ):
        link = page.locator(f"#{figure} a[data-testid=download-link]")
        link.scroll_into_view_if_needed()
        assert link.locator("button[aria-label=Download]").is_visible()
        png = Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
        assert png.format == "PNG" and png.width >= width  # figures at SLIDE_DPI; the overlay twice the input


def slider_maxima(app, labels: tuple[str, ...]) -> list[float]:
    """The maxima the page draws for the sliders with these labels (the app's config, as the browser receives it)."""
    sliders = {c["props"].get("label"): c["props"] for c in app.config["components"] if c["type"] == "slider"}
    return [sliders[label]["maximum"] for label in labels]


def test_the_layer_and_head_sliders_follow_the_models_config_before_it_loads(tiny_settings, tmp_path, classifier):

    loaded = (len(classifier.model.blocks), classifier.model.blocks[0].attn.num_heads)  # (2, 2) in the tiny preset
    build_tiny_vit(tmp_path / "saved")
    assert configured_layers_and_heads(str(tmp_path / "saved")) == loaded
    assert configured_layers_and_heads(str(tmp_path / "not-built-yet"), tiny=True) == loaded  # the tiny recipe
    assert configured_layers_and_heads("vit_small_patch16_224") == (12, 6)  # a timm name, built on the meta device
    assert configured_layers_and_heads(str(tmp_path / "missing")) is None

    settings = dataclasses.replace(tiny_settings, demos=[DEMO_ID])
    app = build_app(settings, ModelStore(settings, [vision_tab.DEMO]))  # nothing loads: the config tells
    labels = ("Layer (0 = rollout over all layers)", "Head (0 = the mean over heads)")
    assert slider_maxima(app, labels) == list(loaded)


def test_the_position_similarity_figure_fits_beside_its_text(classifier):
    figure = similarity_figure(*position_similarity(classifier.model))
    assert figure.width <= 1000 and figure.height <= 900  # half a 1920-pixel slide, at the figures' 160 dpi
