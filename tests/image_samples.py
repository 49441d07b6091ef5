"""Image files of every kind a visitor can send, written into a test's temporary folder (the vision tests share them)."""

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from hub.images import example_photos


def photo() -> Image.Image:
    """A real photograph (scikit-image's cat, 451x300), so preprocessing (resize, crop) has work to do."""
    return Image.fromarray(example_photos()[0])


def halves(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:, : size[0] // 2] = (255, 0, 0)
    array[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG whose EXIF says "turn me 90 degrees clockwise to show me", as phones write them."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    halves().save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def animated_gif() -> bytes:
    """Two frames: red, then blue."""
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A real decompression bomb: a black 1-bit PNG whose pixels would fill far more memory than its bytes."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def save(image: Image.Image, folder: Path, name: str, **kwargs) -> Path:
    path = folder / name
    image.save(path, **kwargs)
    return path


def write_good_images(folder: Path) -> dict[str, Path]:
    """One file per image mode and shape that must work."""
    base = photo().resize((64, 48))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    i16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    files = {
        "RGB": save(base, folder, "rgb.jpg"),
        "RGBA": save(rgba, folder, "rgba.png"),
        "L": save(base.convert("L"), folder, "l.png"),
        "LA": save(base.convert("LA"), folder, "la.png"),
        "P": save(base.convert("P"), folder, "p.png"),
        "CMYK": save(base.convert("CMYK"), folder, "cmyk.jpg"),
        "I;16": save(i16, folder, "i16.png"),
        "1x1": save(Image.new("RGB", (1, 1), (10, 200, 30)), folder, "one_pixel.png"),
        "wide": save(base.resize((3000, 3)), folder, "wide.png"),
        "tall": save(base.resize((2, 2000)), folder, "tall.png"),
        "WebP": save(base, folder, "photo.webp"),
    }
    (folder / "exif_rotated.jpg").write_bytes(exif_rotated_jpeg())
    (folder / "animated.gif").write_bytes(animated_gif())
    files["EXIF"] = folder / "exif_rotated.jpg"
    files["GIF"] = folder / "animated.gif"
    return files


def write_bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that must be refused, each with the words its message must contain."""
    buffer = io.BytesIO()
    photo().save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "random.png").write_bytes(os.urandom(4096))
    (folder / "text.jpg").write_bytes(b"this is not an image\n" * 20)
    (folder / "bomb.png").write_bytes(bomb_png(10_000, 6_000))  # 60 Mpx: under Pillow's warning, over our cap
    (folder / "huge_bomb.png").write_bytes(bomb_png(20_000, 20_000))  # 400 Mpx: Pillow's own limit trips too
    return {
        "truncated": (folder / "truncated.jpg", "truncated or damaged"),
        "random bytes": (folder / "random.png", "not an image"),
        "text": (folder / "text.jpg", "not an image"),
        "bomb": (folder / "bomb.png", "too large"),
        "huge bomb": (folder / "huge_bomb.png", "too large"),
    }
