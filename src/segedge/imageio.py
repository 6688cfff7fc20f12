"""Reading images into ``HxWx3 uint8 RGB`` arrays and writing images atomically.

Paths are read as bytes and decoded in memory (``np.fromfile`` + ``cv2.imdecode``), so file names
in any language and with spaces work on every platform, unlike ``cv2.imread``. Decoding applies the
EXIF orientation; grayscale, RGBA (alpha dropped), palette and 16-bit images all come out as
8-bit RGB.

Images above a pixel limit are refused before they are decoded (the size is read from the file's
header), because a small compressed file can expand to gigabytes: a 20000x20000 PNG of 1.2 MB
decodes to 1.2 GB and segmenting it took 3.8 GB. The limit is :data:`DEFAULT_MAX_PIXELS`, or
``$SEGEDGE_MAX_PIXELS``, or the ``max_pixels`` argument (``0`` = no limit).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from segedge.errors import ImageError
from segedge.fileio import atomic_write_bytes
from segedge.image_formats import WRITE_EXTENSIONS

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

#: Images with more pixels are refused unless the limit is raised: 100 megapixels (e.g. 12000x8000).
DEFAULT_MAX_PIXELS = 100_000_000

_MAX_FILE_BYTES = 2**31 - 1  # OpenCV's decoders take at most this many bytes


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$SEGEDGE_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. ``0`` means no limit."""
    if max_pixels is None:
        text = os.environ.get("SEGEDGE_MAX_PIXELS", "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(text)
        except ValueError:
            raise ImageError(
                f"SEGEDGE_MAX_PIXELS must be a whole number of pixels (0 = no limit), got {text!r}"
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 0:
        raise ImageError(f"max_pixels must be a whole number of pixels, 0 for no limit, got {max_pixels!r}")
    return int(max_pixels)


def _check_pixels(hw: tuple[int, int], limit: int, what: str) -> None:
    h, w = hw
    if limit and h * w > limit:
        raise ImageError(
            f"{what} is {w}x{h} = {h * w / 1e6:.1f} megapixels, above the limit of {limit / 1e6:g} megapixels; "
            "downscale it, or raise the limit (--max-pixels N, max_pixels=N or SEGEDGE_MAX_PIXELS; 0 = no limit)"
        )


def read_image(source: ImageSource, max_pixels: int | None = None) -> np.ndarray:
    """Load an image as a contiguous ``HxWx3 uint8`` RGB array.

    ``source`` is a path (str or PathLike), the encoded file's bytes, or an array. Arrays are taken
    to be RGB(A) already: ``HxW`` and ``HxWx1`` become gray RGB, ``HxWx4`` drops alpha, 16-bit
    arrays are scaled to 8 bits (``>> 8``), float arrays must be in ``[0, 1]``. Images above
    ``max_pixels`` (see :func:`max_pixels_limit`) raise :class:`ImageError` before decoding.
    """
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixels(source.shape[:2], limit, f"the image array {source.shape}")
        return _array_to_rgb(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(np.frombuffer(source, dtype=np.uint8), "the given bytes", limit)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ImageError(f"image file not found: {path}") from None
        except OSError as exc:
            raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path} is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{path} is not a regular file (a pipe, socket or device); save the image to a file first")
        if info.st_size > _MAX_FILE_BYTES:
            raise ImageError(
                f"image file {path} is {info.st_size / 2**30:.1f} GiB, too large to decode (at most 2 GiB)"
            )
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as exc:
            raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
        if data.size == 0:
            raise ImageError(f"image file {path} is empty (0 bytes)")
        return _decode(data, str(path), limit)
    raise ImageError(
        f"cannot read an image from a {type(source).__name__}; pass a file path, the file's bytes or an HxWx3 array"
    )


class _TooLarge(Exception):
    pass


def header_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """``(H, W)`` read from an encoded image's header without decoding it (Pillow), or None when
    Pillow does not know the format (OpenCV may still decode it). EXIF rotation is not applied, so
    the pixel count is right but H and W may be swapped."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: we apply our own limit
            with Image.open(
                io.BytesIO(memoryview(data).tobytes() if isinstance(data, np.ndarray) else bytes(data))
            ) as im:
                w, h = im.size
        return int(h), int(w)
    except Image.DecompressionBombError as exc:
        # Pillow refuses headers above 2 x Image.MAX_IMAGE_PIXELS (179 MP by default) outright
        raise _TooLarge(str(exc)) from None
    except Exception:  # noqa: BLE001  (unknown or broken header: let OpenCV decide)
        return None


def _decode(data: np.ndarray, what: str, limit: int = 0) -> np.ndarray:
    if data.size == 0:
        raise ImageError(f"{what}: no image data (0 bytes)")
    if limit:
        try:
            hw = header_size(data)
        except _TooLarge as exc:
            from PIL import Image

            if Image.MAX_IMAGE_PIXELS and limit < 2 * Image.MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{what} is above the limit of {limit / 1e6:g} megapixels ({exc}); downscale it, or raise "
                    "the limit (--max-pixels N, max_pixels=N or SEGEDGE_MAX_PIXELS; 0 = no limit)"
                ) from None
            hw = None
        if hw is not None:
            _check_pixels(hw, limit, what)
    # IMREAD_COLOR applies EXIF orientation and converts gray/palette/RGBA/16-bit to 8-bit BGR.
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{what} could not be decoded: {str(exc).strip().splitlines()[-1]}") from None
    if bgr is None or bgr.size == 0:
        raise ImageError(
            f"{what} could not be decoded as an image: the file is corrupt, truncated or not an image format "
            "OpenCV reads (jpg, png, bmp, tif, webp, ...)"
        )
    _check_pixels(bgr.shape[:2], limit, what)
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
