"""PNG checks and tiny pictures shared by the figure and report tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_image(data: bytes, min_side: int = 200, max_side: int = 4000) -> np.ndarray:
    """Decode PNG bytes, check the size is sensible and the picture is not blank; the pixels."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.verify()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), float)
    height, width, _ = pixels.shape
    assert min_side <= width <= max_side and min_side <= height <= max_side, (width, height)
    assert pixels.std() > 0
    return pixels


def tiny_png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    """A small solid-colour PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()
