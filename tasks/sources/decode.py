"""Odd image files made into plain 8-bit RGB: what the load stage stores for an image folder.

Every source's images pass through here at load (``normalised_bytes`` for an image folder,
``image_problem`` for Parquet and WebDataset sources, read in place): an image that does not
decode, or has more pixels than the limit (a decompression bomb), is skipped by name and counted,
so the model never meets it.

The rest of the pipeline decodes stored images with ``Image.open(...).convert("RGB")``. That is
right for 8-bit RGB and grayscale files, and wrong for others: a 16-bit grayscale PNG clips to
white, an alpha channel is dropped (transparent pixels show whatever colour they hide), EXIF
orientation is ignored. So such files are decoded here once, correctly, and stored as PNG.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Transparent pixels are composited on white, as a browser shows them on a default page.
BACKGROUND = (255, 255, 255)

# Modes whose ``convert("RGB")`` is already the right 8-bit RGB picture.
PLAIN_MODES = {"RGB", "L", "1", "CMYK", "YCbCr"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
EXIF_ORIENTATION = 0x0112
# Pillow's own default for Image.MAX_IMAGE_PIXELS (about 89.5 megapixels: 1024 x 1024 x 1024 //
# 4 // 3), the default of ``--max-image-pixels``
DEFAULT_MAX_PIXELS = 89_478_485


class UnsupportedImageError(ValueError):
    """An image file that cannot be decoded into 8-bit RGB; the message says why."""


def _gray16_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (65535 -> 255), as RGB."""
    values = np.asarray(image).astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise UnsupportedImageError(f"{image.mode} image with values outside 0..65535")
    gray = np.round(values / 257).astype(np.uint8)  # 257 = 65535 / 255
    return Image.fromarray(gray).convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """The first frame of a decoded image as 8-bit RGB, upright, alpha on ``BACKGROUND``."""
    image.seek(0)  # an animation: its first frame
    image = ImageOps.exif_transpose(image)  # a rotated camera JPEG: upright
    if image.mode in SIXTEEN_BIT_MODES:
        return _gray16_to_rgb(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in PLAIN_MODES or image.mode == "P":
        return image.convert("RGB")
    raise UnsupportedImageError(f"image mode {image.mode} is not supported (use 8-bit RGB or gray)")


def _is_plain(image: Image.Image) -> bool:
    """True when ``convert("RGB")`` of the stored bytes already gives the right picture."""
    rotated = image.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
    animated = getattr(image, "n_frames", 1) > 1
    return image.mode in ("RGB", "L") and not rotated and not animated and not _has_alpha(image)


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    """The decoded image; ``UnsupportedImageError`` over ``max_pixels`` (before decoding).

    The limit is checked here, on the size the header declares, so that the message names the
    file and the setting. Pillow's own check (``Image.MAX_IMAGE_PIXELS``) is turned off for the
    process: it raises before the size is known to the caller, and at twice its limit only; every
    image the pipeline decodes later passed this check at load.
    """
    Image.MAX_IMAGE_PIXELS = None
    image = Image.open(io.BytesIO(data))
    pixels = image.width * image.height
    if max_pixels is not None and pixels > max_pixels:
        image.close()
        raise UnsupportedImageError(
            f"{image.width} x {image.height} = {pixels} pixels, over the limit of {max_pixels} "
            "(a decompression bomb?); raise --max-image-pixels to read it"
        )
    image.load()
    return image


def image_problem(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> str | None:
    """Why ``data`` is no image the pipeline can decode into RGB, or None when it is one."""
    try:
        with _open(data, max_pixels) as image:
            if not _is_plain(image):
                to_rgb(image)
    except UnsupportedImageError as error:
        return str(error)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        return f"cannot decode: {error}"
    return None


def normalised_bytes(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """The file's own bytes when they decode plainly, else PNG bytes of its 8-bit RGB picture.

    Raises ``UnsupportedImageError`` when the bytes are no image Pillow can decode into RGB, or
    when the image has more than ``max_pixels`` pixels (None: no limit).
    """
    try:
        with _open(data, max_pixels) as image:
            if _is_plain(image):
                return data
            rgb = to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(error, UnsupportedImageError):
            raise
        raise UnsupportedImageError(f"cannot decode: {error}") from error
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue()
