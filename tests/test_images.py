"""hub.images: every image a visitor can send becomes one upright RGB picture, or a clear HubError before decoding."""

import math

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

import hub.images
from hub.errors import HubError
from hub.images import MAX_ASPECT_RATIO, MAX_PIXELS_PER_CALL, TRIM_AFTER_PIXELS, check_total_pixels, load_image
from tests.image_samples import bomb_png, halves, write_bad_images, write_good_images


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def good(folder):
    return write_good_images(folder)


@pytest.fixture(scope="module")
def bad(folder):
    return write_bad_images(folder)


@pytest.mark.parametrize(
    "kind", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1x1", "wide", "tall", "WebP", "EXIF", "GIF"]
)
def test_every_kind_of_image_becomes_rgb(good, kind):
    picture = load_image(str(good[kind]))
    assert picture.mode == "RGB"
    width, height = picture.size
    assert width >= 1 and height >= 1 and max(width, height) <= MAX_ASPECT_RATIO * min(width, height)


def test_gradio_file_data_and_pil_images_are_accepted(good):
    from_dict = load_image({"path": str(good["RGB"]), "orig_name": "rgb.jpg"})
    from_pil = load_image(Image.open(good["RGB"]))
    assert np.array_equal(np.asarray(from_dict), np.asarray(from_pil))


def test_rgb_pixels_are_unchanged(good):
    assert np.array_equal(np.asarray(load_image(str(good["RGB"]))), np.asarray(Image.open(good["RGB"]).convert("RGB")))


def test_transparency_becomes_white(tmp_path):
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    assert load_image(str(tmp_path / "clear.png")).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (4, 4), (0, 128))
    assert load_image(half).getpixel((0, 0)) == pytest.approx((127, 127, 127), abs=1)


def test_sixteen_bit_images_are_scaled_not_clipped(good):
    sixteen = np.asarray(Image.open(good["I;16"]), dtype=np.float64)
    ours = np.asarray(load_image(str(good["I;16"])))[..., 0].astype(np.float64)
    assert np.abs(ours - sixteen / 257).max() <= 1  # clipping would make nearly every pixel white
    assert ours.std() > 10


def test_exif_rotated_photos_come_out_upright(good):
    upright = load_image(str(good["EXIF"]))
    assert upright.size == (20, 40)  # stored 40x20, shown turned by 90 degrees
    reference = ImageOps.exif_transpose(Image.open(good["EXIF"])).convert("RGB")
    assert np.array_equal(np.asarray(upright), np.asarray(reference))
    red, blue = upright.getpixel((10, 2)), upright.getpixel((10, 37))
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60  # red on top after turning clockwise


def test_animated_gifs_give_their_first_frame(good):
    picture = load_image(str(good["GIF"]))
    assert picture.getpixel((8, 8)) == (255, 0, 0)


def test_extreme_strips_are_cut_to_their_centre():
    strip = halves((4000, 2))
    cut = load_image(strip)
    assert cut.size == (MAX_ASPECT_RATIO * 2, 2)
    assert load_image(halves((2, 4))).size == (2, 4)  # ordinary shapes are left alone


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "text", "bomb", "huge bomb"])
def test_bad_files_get_a_clear_message(bad, kind):
    path, message = bad[kind]
    with pytest.raises(HubError, match=message):
        load_image(str(path))


@pytest.mark.parametrize("kind", ["bomb", "huge bomb"])
def test_bombs_are_refused_before_any_pixel_is_decoded(bad, kind, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(HubError, match="too large"):
        load_image(str(bad[kind][0]))


def test_many_large_images_in_one_request_are_refused_from_their_headers(folder, monkeypatch):
    """Each 40-Mpx file is allowed alone; three in one request would decode to 360 MB, more than one call may."""
    paths = []
    for n in range(3):
        path = folder / f"large-{n}.png"
        path.write_bytes(bomb_png(8_000, 5_000))
        paths.append(str(path))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    check_total_pixels(paths[:2])  # 80 Mpx together: allowed
    with pytest.raises(HubError, match=f"120 megapixels together; at most {MAX_PIXELS_PER_CALL // 10**6}"):
        check_total_pixels(paths)


def test_a_large_pil_image_is_refused_too():
    with pytest.raises(HubError, match="too large"):
        load_image(Image.new("1", (10_000, 6_000)))


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "no image"),
        ("", "must be an image"),
        (42, "must be an image"),
        ({"path": "/nonexistent/x.png"}, "missing"),
    ],
)
def test_missing_or_wrong_inputs_get_a_message(value, message):
    with pytest.raises(HubError, match=message):
        load_image(value)


def test_nan_in_a_float_image_does_not_crash():
    values = np.full((4, 4), math.nan, dtype=np.float32)
    values[0, 0] = 0.5
    assert load_image(Image.fromarray(values, mode="F")).mode == "RGB"


def test_memory_goes_back_to_the_system_at_once_after_a_large_picture_only(monkeypatch):
    trims = []
    monkeypatch.setattr(hub.images, "release_freed_memory", lambda: trims.append("trim"))
    web_photo = 600 * 400  # leaves little behind: handed back when the server next goes idle, not on every request
    hub.images.reserve_pixels(web_photo)
    hub.images.release_pixels(web_photo)
    assert trims == []
    hub.images.reserve_pixels(TRIM_AFTER_PIXELS)  # a 4-megapixel picture and more: at once
    hub.images.release_pixels(TRIM_AFTER_PIXELS)
    assert trims == ["trim"]
