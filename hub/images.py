"""Images from visitors, made safe for any vision model: one upright RGB picture, or a clear HubError.

Gradio hands the server the uploaded file untouched (the tabs use `preprocess=False`), so a decompression bomb is
refused from its header before a single pixel is decoded, and random bytes get a message instead of a traceback.
"""

import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from gradio_client.utils import is_file_obj_with_meta
from PIL import Image, ImageOps, UnidentifiedImageError

from hub.errors import HubError
from hub.jobs import release_freed_memory

MAX_PIXELS = 50_000_000  # about a 50-megapixel photo; Pillow itself only warns from 89 Mpx
# All the images of one request together: decoded to RGB, 100 Mpx is 300 MB; twelve 50-Mpx files would be 1.8 GB.
MAX_PIXELS_PER_CALL = 100_000_000
MAX_ASPECT_RATIO = 20  # longer strips are cut to their centre, which is all a centre-cropping model looks at
# After a picture this large (or larger) the memory it freed goes back to the system at once. Smaller ones leave
# little behind and the server hands that back when it next goes idle (hub.fair_share): trimming after each one cost
# a web photo's request 8-23 ms of page faults in its next forward pass.
TRIM_AFTER_PIXELS = 4_000_000
# Pillow modes holding more than 8 bits per channel; they are scaled down, not clipped (clipping turns them white).
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# All requests together: a limit per request is no limit in total (16 requests of 49 Mpx each at once took 5 GB).
# A picture's pixels count from before it is decoded until the RGB picture handed to the demo is freed; a request
# that would pass the limit waits for others to finish, for WAIT_FOR_PIXELS_S at most, then is refused.
WAIT_FOR_PIXELS_S = 20.0
_pixels = threading.Condition()
_pixels_in_flight = 0
_max_pixels_in_flight = 200_000_000


def set_pixels_in_flight(max_pixels: float) -> None:
    """The operator's limit on pixels decoding or decoded at once across all requests (--megapixels-in-flight)."""
    global _max_pixels_in_flight
    _max_pixels_in_flight = int(max_pixels)


def pixels_in_flight() -> int:
    return _pixels_in_flight


def reserve_pixels(count: int, name: str = "Image") -> None:
    """Count `count` pixels as in flight, waiting while the server holds too many; a HubError when it stays busy."""
    global _pixels_in_flight
    deadline = time.monotonic() + WAIT_FOR_PIXELS_S
    with _pixels:
        # one picture alone always fits (each is at most MAX_PIXELS): a large one is never refused forever
        while _pixels_in_flight and _pixels_in_flight + count > _max_pixels_in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HubError(
                    f"{name}: the server is reading many large images right now; please try again in a minute "
                    "(or send a smaller image)."
                )
            _pixels.wait(left)
        _pixels_in_flight += count


def release_pixels(count: int) -> None:
    global _pixels_in_flight
    with _pixels:
        _pixels_in_flight = max(0, _pixels_in_flight - count)
        _pixels.notify_all()
        none_left = _pixels_in_flight == 0
    if none_left and count >= TRIM_AFTER_PIXELS:  # a large decoded picture: glibc would keep its hundreds of MB
        release_freed_memory()


def image_path(image: Any) -> str | None:
    """The file path inside what Gradio passes: a path string, or a FileData dict when preprocess=False."""
    if isinstance(image, dict):
        image = image.get("path")
    if isinstance(image, str | Path) and str(image):
        return str(image)
    return None


def uploaded_file(value: Any, name: str = "Image") -> dict:
    """What a JSON endpoint (gr.api) may read: a file uploaded through Gradio (gradio_client's handle_file sends
    one), which Gradio has checked lies in its upload folder; never a path on the server named by the caller."""
    if not is_file_obj_with_meta(value):
        got = "a dict that is not an uploaded file" if isinstance(value, dict) else type(value).__name__
        raise HubError(f"{name} must be an uploaded image file (gradio_client.handle_file(path)), got {got}.")
    return value


def load_image(image: Any, name: str = "Image") -> Image.Image:
    """An RGB image from a PIL image, a file path or Gradio's file data: upright (EXIF), first frame only,
    transparency flattened onto white, wide bit depths scaled to 8 bits, extreme strips cut to MAX_ASPECT_RATIO."""
    if image is None:
        raise HubError(f"{name}: no image given; upload, paste or take a picture first.")
    if isinstance(image, Image.Image):
        check_size(image.size, name)
        picture = image
    else:
        path = image_path(image)
        if path is None:
            raise HubError(f"{name} must be an image file, got {type(image).__name__}.")
        picture = open_image_file(path, name)
    width, height = picture.size
    reserve_pixels(width * height, name)
    try:
        try:
            picture.seek(0)  # animated GIF/WebP/PNG: the first frame
            picture.load()
            picture = ImageOps.exif_transpose(picture)
        except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data shows up only when decoding
            raise HubError(f"{name} could not be read: the file is truncated or damaged ({error}).") from error
        rgb = limit_aspect_ratio(to_rgb(picture))
    except BaseException:
        release_pixels(width * height)
        raise
    weakref.finalize(rgb, release_pixels, width * height)  # in flight until the demo lets go of the picture
    return rgb


def check_total_pixels(images: list[Any], max_pixels: int = MAX_PIXELS_PER_CALL) -> None:
    """Refuse a request whose images would decode to more than `max_pixels` together, reading only their headers
    (each one's own checks come when it is loaded)."""
    total = 0
    for n, image in enumerate(images, 1):
        if isinstance(image, Image.Image):
            width, height = image.size
        elif (path := image_path(image)) is not None:
            width, height = open_image_file(path, f"Image {n}" if len(images) > 1 else "Image").size
        else:
            continue  # load_image will say what is wrong with it
        total += width * height
    if total > max_pixels:
        raise HubError(
            f"These {len(images)} images hold {total / 1e6:.0f} megapixels together; at most "
            f"{max_pixels / 1e6:.0f} per request. Send fewer or smaller images."
        )


def open_image_file(path: str, name: str = "Image") -> Image.Image:
    """Open a file lazily (header only) and refuse it before decoding when it is not an image or too large."""
    if not Path(path).is_file():
        raise HubError(f"{name}: the uploaded file is missing; please upload it again.")
    try:
        picture = Image.open(path)
    except Image.DecompressionBombError as error:  # Pillow's own limit, far above ours
        raise HubError(f"{name} is too large: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise HubError(f"{name} is not an image this server can read (JPEG, PNG, GIF, WebP, BMP, TIFF...).") from error
    check_size(picture.size, name)
    return picture


def check_size(size: tuple[int, int], name: str = "Image") -> None:
    width, height = size
    if width < 1 or height < 1:
        raise HubError(f"{name} is empty ({width}x{height} pixels).")
    if width * height > MAX_PIXELS:
        raise HubError(
            f"{name} is too large: {width}x{height} = {width * height / 1e6:.0f} megapixels, "
            f"at most {MAX_PIXELS / 1e6:.0f}. Please resize it."
        )


def to_rgb(picture: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparent parts become white, as they look on a page."""
    if picture.mode in WIDE_MODES:
        values = np.nan_to_num(np.asarray(picture, dtype=np.float64))
        picture = Image.fromarray(np.clip(values / full_scale(picture.mode, values) * 255, 0, 255).astype(np.uint8))
    if picture.mode == "P" or picture.mode == "PA":
        picture = picture.convert("RGBA")  # a palette may carry transparency
    if picture.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return picture.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGB


def full_scale(mode: str, values: np.ndarray) -> float:
    """The value that means "white" in a wide-mode image: 16-bit files use 65535; 32-bit ones say nothing, so guess."""
    if mode.startswith("I;16"):
        return 65535.0
    brightest = float(np.nanmax(values, initial=0))
    if mode == "F" and brightest <= 1.0:
        return 1.0
    return 255.0 if brightest <= 255 else 65535.0


def limit_aspect_ratio(picture: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Cut a very long strip to its centre: resizing a 1x10000 strip to a model's short side would need gigabytes."""
    width, height = picture.size
    if width > max_ratio * height:
        keep = max(1, round(max_ratio * height))
        left = (width - keep) // 2
        return picture.crop((left, 0, left + keep, height))
    if height > max_ratio * width:
        keep = max(1, round(max_ratio * width))
        top = (height - keep) // 2
        return picture.crop((0, top, width, top + keep))
    return picture


def example_photos() -> list[np.ndarray]:
    """Public-domain photographs that ship with scikit-image (loaded at run time, none copied into the project):
    a cat, a coffee cup, an astronaut, a rocket, motorcycles."""
    from skimage import data

    return [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.stereo_motorcycle()[0]]
