"""Reading any image into HxWx3 uint8 RGB, writing outputs atomically, clear errors for bad files."""

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from segedge.errors import ImageError
from segedge.imageio import read_image, resolve_output_path, write_image


def rgb_pattern(h=40, w=60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w, dtype=np.uint8)[None, :] * 4
    img[..., 1] = np.arange(h, dtype=np.uint8)[:, None] * 6
    img[..., 2] = 200
    return img


@pytest.mark.parametrize("name", ["plain.png", "with space.png", "中文图片.png", "ñandú émoji 🐕.png", "دب.png"])
def test_any_file_name(tmp_path, name):
    img = rgb_pattern()
    path = tmp_path / "子目录 x" / name
    path.parent.mkdir()
    Image.fromarray(img).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, img)  # RGB order, lossless
    np.testing.assert_array_equal(read_image(str(path)), img)


def test_bytes_and_arrays(tmp_path):
    img = rgb_pattern()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    np.testing.assert_array_equal(read_image(buf.getvalue()), img)
    np.testing.assert_array_equal(read_image(bytearray(buf.getvalue())), img)
    gray = img[..., 0]
    np.testing.assert_array_equal(read_image(gray), np.repeat(gray[..., None], 3, 2))
    rgba = np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(read_image(rgba), img)
    np.testing.assert_array_equal(read_image(img.astype(np.uint16) * 257), img)
    np.testing.assert_array_equal(read_image(img.astype(np.float32) / 255), img)


def test_exif_orientation_is_applied(tmp_path):
    img = rgb_pattern(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (60, 40, 3)
    expected = np.rot90(img, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6  # JPEG noise only


def test_gray_rgba_palette_16bit_files(tmp_path):
    img = rgb_pattern()
    Image.fromarray(img[..., 1]).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[..., 0], img[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])

    Image.fromarray(np.dstack([img, np.full(img.shape[:2], 128, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), img)

    Image.fromarray(img).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    pal = read_image(tmp_path / "palette.png")
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert pal.shape == (40, 60, 3)
    np.testing.assert_array_equal(pal, expected)

    deep = img.astype(np.uint16) * 257 + 3
    cv2.imwrite(str(tmp_path / "deep.png"), deep[..., ::-1])
    out16 = read_image(tmp_path / "deep.png")
    assert out16.dtype == np.uint8
    np.testing.assert_array_equal(out16, img)


def test_missing_empty_corrupt_unsupported(tmp_path):
    with pytest.raises(ImageError, match="image file not found: .*nope.jpg"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageError, match=r"corrupt\.png could not be decoded as an image"):
        read_image(tmp_path / "corrupt.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.txt could not be decoded"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="must be HxW, HxWx1, HxWx3 or HxWx4"):
        read_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        read_image(5)


def test_output_path_rules(tmp_path):
    assert resolve_output_path(tmp_path / "out.png", "img", ".png") == tmp_path / "out.png"
    assert resolve_output_path(tmp_path / "results", "img", ".png") == tmp_path / "results" / "img.png"
    assert resolve_output_path(str(tmp_path / "r") + os.sep, "img", ".png") == tmp_path / "r" / "img.png"
    (tmp_path / "dir.v2").mkdir()
    assert resolve_output_path(tmp_path / "dir.v2", "img", ".png") == tmp_path / "dir.v2" / "img.png"


def test_write_creates_parents_and_is_atomic(tmp_path, monkeypatch):
    img = rgb_pattern()
    target = tmp_path / "a" / "b" / "über.png"
    write_image(target, img)
    np.testing.assert_array_equal(read_image(target), img)
    before = target.read_bytes()

    def boom(src, dst):
        raise KeyboardInterrupt  # an interruption at the worst moment

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.zeros_like(img))
    monkeypatch.undo()
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["über.png"]  # no temporary left behind


def test_write_errors(tmp_path):
    with pytest.raises(ImageError, match="cannot write '.gif' images"):
        write_image(tmp_path / "x.gif", rgb_pattern())
    with pytest.raises(ImageError, match="has no file extension"):
        write_image(tmp_path / "x", rgb_pattern())
