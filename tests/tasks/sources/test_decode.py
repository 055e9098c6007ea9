"""Odd image files in an image folder: each decoded to the right 8-bit RGB picture, or skipped.

Every file is written by PIL to disk, read by the load stage's source and decoded by the
embedding stage's ``decode``: the path a real run takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.models.embed import decode
from tasks.sources.decode import BACKGROUND
from tasks.sources.imagefolder import ImageFolderSource

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _loaded(tmp_path: Path, write) -> tuple[np.ndarray | None, ImageFolderSource]:
    """Write one odd image (``write(path_stem)`` returns its path) next to a plain one, load both.

    Returns the odd image's pixels as the pipeline decodes them (None when it was skipped).
    """
    (tmp_path / "odd").mkdir()
    (tmp_path / "plain").mkdir()
    Image.new("RGB", (8, 8), BLUE).save(tmp_path / "plain" / "0.png")
    path = write(tmp_path / "odd" / "image")
    source = ImageFolderSource(tmp_path)
    table = next(source.chunks(100))
    rows = [
        row["image"]["bytes"]
        for row in table.to_pylist()
        if row["image"]["path"] == str(path.relative_to(tmp_path))
    ]
    return (decode(rows)[0] if rows else None), source


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)

    def write(stem: Path) -> Path:
        Image.fromarray(ramp).save(stem.with_suffix(".png"))
        return stem.with_suffix(".png")

    pixels, _ = _loaded(tmp_path, write)
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32, 3)
    expected = np.round(ramp / 257).astype(np.uint8)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], expected)
    assert (pixels == 255).mean() < 0.01  # before: 99.6% of the pixels clipped to white


def test_alpha_is_composited_on_the_documented_background(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent black
    rgba[0] = (255, 0, 0, 255)  # opaque red
    rgba[1] = (255, 0, 0, 128)  # half-transparent red

    def write(stem: Path) -> Path:
        Image.fromarray(rgba, "RGBA").save(stem.with_suffix(".png"))
        return stem.with_suffix(".png")

    pixels, _ = _loaded(tmp_path, write)
    assert BACKGROUND == (255, 255, 255)
    assert (pixels[0] == RED).all()
    assert (pixels[2:] == BACKGROUND).all()  # transparent: the background, not the hidden black
    half = pixels[1, 0].astype(int)
    assert half[0] == 255 and abs(half[1] - 127) <= 1 and abs(half[2] - 127) <= 1


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png_keeps_its_colours(tmp_path: Path, transparent: bool) -> None:
    indices = np.array([[0, 1], [1, 0]], np.uint8)

    def write(stem: Path) -> Path:
        image = Image.fromarray(indices, "P")
        image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
        options = {"transparency": 1} if transparent else {}
        image.save(stem.with_suffix(".png"), **options)
        return stem.with_suffix(".png")

    pixels, _ = _loaded(tmp_path, write)
    second = BACKGROUND if transparent else BLUE  # palette entry 1 is the transparent one
    assert (pixels[0, 0] == RED).all() and (pixels[1, 1] == RED).all()
    assert (pixels[0, 1] == second).all() and (pixels[1, 0] == second).all()


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    def write(stem: Path) -> Path:
        Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(stem.with_suffix(".jpg"), quality=95)
        return stem.with_suffix(".jpg")

    pixels, _ = _loaded(tmp_path, write)
    assert pixels.shape == (16, 16, 3)
    assert np.abs(pixels.astype(int) - RED).max() <= 8  # cyan 0, magenta and yellow full: red


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((16, 32, 3), np.uint8)  # as stored: 32 wide, left half red, right blue
    stored[:, :16], stored[:, 16:] = RED, BLUE

    def write(stem: Path) -> Path:
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        image.save(stem.with_suffix(".jpg"), exif=exif, quality=95)
        return stem.with_suffix(".jpg")

    pixels, _ = _loaded(tmp_path, write)
    assert pixels.shape == (32, 16, 3)  # upright: 16 wide, 32 tall
    upright = np.rot90(stored, k=-1)  # clockwise: the left half becomes the top half
    assert np.abs(pixels[2:14].astype(int) - upright[2:14]).max() <= 16  # red on top
    assert np.abs(pixels[18:30].astype(int) - upright[18:30]).max() <= 16  # blue below


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    def write(stem: Path) -> Path:
        frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE, BLUE)]
        frames[0].save(stem.with_suffix(".gif"), save_all=True, append_images=frames[1:])
        return stem.with_suffix(".gif")

    pixels, _ = _loaded(tmp_path, write)
    assert pixels.shape == (8, 8, 3) and (pixels == RED).all()


def test_an_unsupported_image_is_skipped_by_name_with_a_warning(tmp_path: Path, caplog) -> None:
    def write(stem: Path) -> Path:
        # 32-bit float pixels: no meaning as 8-bit colour that could be assumed
        Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(stem.with_suffix(".tif"))
        return stem.with_suffix(".tif")

    pixels, source = _loaded(tmp_path, write)
    path = str(tmp_path / "odd" / "image.tif")
    assert pixels is None and source.skipped == [path]
    assert f"cannot decode {path}: image mode F is not supported" in caplog.text


def test_plain_files_keep_their_own_bytes(tmp_path: Path) -> None:
    def write(stem: Path) -> Path:
        Image.new("L", (8, 8), 90).save(stem.with_suffix(".jpg"))
        return stem.with_suffix(".jpg")

    _loaded(tmp_path, write)
    source = ImageFolderSource(tmp_path)
    stored = {
        row["image"]["path"]: row["image"]["bytes"] for row in next(source.chunks(9)).to_pylist()
    }
    for name, data in stored.items():
        assert data == (tmp_path / name).read_bytes()  # not re-encoded
