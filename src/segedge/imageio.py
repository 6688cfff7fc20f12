"""Reading images into ``HxWx3 uint8 RGB`` arrays and writing images atomically.

Paths are read as bytes and decoded in memory (``np.fromfile`` + ``cv2.imdecode``), so file names
in any language and with spaces work on every platform, unlike ``cv2.imread``. Decoding applies the
EXIF orientation; grayscale, RGBA (alpha dropped), palette and 16-bit images all come out as
8-bit RGB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from segedge.errors import ImageError
from segedge.fileio import atomic_write_bytes

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

#: Extensions :func:`write_image` encodes (OpenCV's encoders available in every opencv wheel).
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(source: ImageSource) -> np.ndarray:
    """Load an image as a contiguous ``HxWx3 uint8`` RGB array.

    ``source`` is a path (str or PathLike), the encoded file's bytes, or an array. Arrays are taken
    to be RGB(A) already: ``HxW`` and ``HxWx1`` become gray RGB, ``HxWx4`` drops alpha, 16-bit
    arrays are scaled to 8 bits (``>> 8``), float arrays must be in ``[0, 1]``.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(np.frombuffer(source, dtype=np.uint8), "the given bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file not found: {path}")
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image file")
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as exc:
            raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
        if data.size == 0:
            raise ImageError(f"image file {path} is empty (0 bytes)")
        return _decode(data, str(path))
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}; pass a file path, the file's bytes or an HxWx3 array"
    )


def _decode(data: np.ndarray, what: str) -> np.ndarray:
    if data.size == 0:
        raise ImageError(f"{what}: no image data (0 bytes)")
    # IMREAD_COLOR applies EXIF orientation and converts gray/palette/RGBA/16-bit to 8-bit BGR.
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageError(
            f"{what} could not be decoded as an image: the file is corrupt, truncated or not an image format "
            "OpenCV reads (jpg, png, bmp, tif, webp, ...)"
        )
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _array_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image array is empty (shape {image.shape})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ImageError("a float image array must hold finite values in [0, 1]; pass uint8 for 0-255 data")
        image = np.round(image * 255).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise ImageError(f"image array dtype {image.dtype} is not supported; pass uint8, uint16 or float in [0, 1]")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def image_stem(source: ImageSource, default: str = "image") -> str:
    """A file-name stem for outputs derived from ``source`` (its file name without extension)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stem or default
    return default


def resolve_output_path(out: str | os.PathLike, stem: str, suffix: str) -> Path:
    """Decide where an output goes.

    ``out`` is a directory when it already is one, ends with a path separator, or has no file
    extension (``--out results`` means the folder ``results/``); the file is then
    ``out/<stem><suffix>``. Otherwise ``out`` is the file path itself.
    """
    text = os.fspath(out)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        return path / f"{stem}{suffix}"
    return path


def encode_image(image_rgb: np.ndarray, ext: str) -> bytes:
    """Encode an ``HxWx3 uint8`` RGB (or ``HxW``) array to the bytes of an ``ext`` file."""
    ext = ext.lower()
    if ext not in WRITE_EXTENSIONS:
        raise ImageError(f"cannot write {ext!r} images; use one of {', '.join(WRITE_EXTENSIONS)}")
    array = image_rgb[:, :, ::-1] if image_rgb.ndim == 3 else image_rgb
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(array))
    if not ok:
        raise ImageError(f"OpenCV could not encode a {array.shape} {array.dtype} image as {ext}")
    return buffer.tobytes()


def write_image(path: str | os.PathLike, image_rgb: np.ndarray) -> Path:
    """Write an RGB image to ``path`` atomically (temporary file, then rename); creates parent folders."""
    path = Path(path)
    if not path.suffix:
        raise ImageError(f"{path} has no file extension; name the file with one of {', '.join(WRITE_EXTENSIONS)}")
    return atomic_write_bytes(path, encode_image(image_rgb, path.suffix))
