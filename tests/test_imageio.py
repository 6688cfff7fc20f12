"""Reading any image into HxWx3 uint8 RGB, writing outputs atomically, clear errors for bad files."""

import io
import os
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
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


# -- a pixel limit (issue 12), checked from the header before decoding -------------------------------------------
def huge_png(path: Path, w: int, h: int) -> Path:
    """A valid all-black gray PNG of w x h, written row by row (never held in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    body = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_refuses_before_decoding(tmp_path, bus):
    big = huge_png(tmp_path / "big.png", 12_000, 12_000)  # 144 MP, a 140 kB file
    assert big.stat().st_size < 1_000_000
    code = (
        "import sys\n"
        "from segedge.bench.probe import peak_rss_mb\n"
        "from segedge.imageio import read_image\n"
        "from segedge.errors import ImageError\n"
        "try:\n    read_image(sys.argv[1])\nexcept ImageError as exc:\n    print(exc)\n"
        "print(int(peak_rss_mb()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120)
    message, peak_mb = proc.stdout.strip().splitlines()
    assert (
        "is 12000x12000 = 144.0 megapixels, above the limit of 100 megapixels" in message and "--max-pixels" in message
    )
    assert int(peak_mb) < 300, f"peak RSS {peak_mb} MB: the image was decoded"  # decoding alone takes 432 MB
    with pytest.raises(ImageError, match="above the limit of 0.5 megapixels"):
        read_image(bus, max_pixels=500_000)
    with pytest.raises(ImageError, match="image array"):
        read_image(np.zeros((2000, 2000, 3), np.uint8), max_pixels=1_000_000)
    assert read_image(bus, max_pixels=0).shape == (1080, 810, 3)


def test_cli_max_pixels(capsys, real_folder_640, bus, tmp_path):
    code, _, err = run_cli(
        capsys, "segment", bus, "--model", real_folder_640, "--out", tmp_path / "o", "--max-pixels", "500000"
    )
    assert code == 2 and "810x1080 = 0.9 megapixels, above the limit of 0.5 megapixels" in err
    assert not (tmp_path / "o").exists()
