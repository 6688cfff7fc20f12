"""Frames of a video for tracking, read when asked for: random access in files, frame folders and arrays,
forward-only in cameras and streams.

SAM 2's video predictor loads every frame up front (resized to 1024x1024 floats: 12 MB a frame); a
tracker that must not grow with the video reads one frame at a time instead. Sources:

- a video file (any name :func:`segedge.videoio.is_video_source` accepts): OpenCV, sequential reads with
  a seek only when asked for another frame than the next;
- a folder of JPEG frames named by their number (``00000.jpg``, ...: SAM 2's own video format), in
  number order;
- a sequence of images (paths or ``HxWx3`` uint8 RGB arrays);
- a camera index or stream URL: frames in order only, count unknown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from segedge.errors import ImageError
from segedge.imageio import read_image
from segedge.videoio import VideoSource, is_live_source

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".JPG", ".JPEG")


class VideoFrames:
    """``len()`` (None for cameras and streams: :attr:`num_frames`), ``frame(i)`` -> ``HxWx3`` uint8 RGB,
    ``size`` ``(H, W)`` of the first frame (every frame must have it)."""

    def __init__(self, source: str | os.PathLike | Sequence, max_pixels: int | None = None):
        self.max_pixels = max_pixels
        self._capture = None
        self._next = 0  # the index the open capture reads next
        self._items: list | None = None
        self._folder = False  # items are a JPEG folder's frames (decoded as SAM 2 decodes them)
        self._count: int | None = None  # a file's frame count
        self._stream: VideoSource | None = None
        self._stream_iter = None
        self.fps = 0.0  # frames per second when the source says (files, cameras), else 0
        self._cached: tuple[int, np.ndarray] | None = None  # the last frame read: drawing it costs no second read
        if isinstance(source, (str, os.PathLike)):
            value = os.fspath(source)
            path = Path(value)
            if path.is_dir():
                self._items = _frame_folder(path)
                self._folder = True
                self.name = value
            elif is_live_source(value):
                self._stream = VideoSource(value)
                self._stream_iter = iter(self._stream)
                self.fps = self._stream.fps
                self.name = value
            else:
                self._open_file(path)
        else:
            items = list(source)
            if not items:
                raise ImageError("the video has no frames: pass a file, a folder of frames or a non-empty list")
            self._items = items
            self.name = "frames"
        self.num_frames: int | None = len(self._items) if self._items is not None else self._count
        first = self.frame(0)
        self.size = tuple(first.shape[:2])

    # -- sources ------------------------------------------------------------------------------------
    def _open_file(self, path: Path) -> None:
        source = VideoSource(path)  # checks the file and opens it (one clear line when it cannot)
        self._capture = source.capture
        self.fps = source.fps
        self.name = str(path)
        self._count = source.frame_count
        if not self._count:
            raise ImageError(f"{path}: the video reports no frame count; convert it to mp4 (H.264)")

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``HxWx3`` uint8 RGB (raises :class:`ImageError` past the end)."""
        if index < 0 or (self.num_frames is not None and index >= self.num_frames):
            raise ImageError(f"frame {index} is outside the video (frames 0 to {(self.num_frames or 1) - 1})")
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        if self._items is not None:
            item = self._items[index]
            rgb = _pil_frame(item) if isinstance(item, Path) and self._folder else read_image(item, self.max_pixels)
        elif self._stream is not None:
            rgb = self._stream_frame(index)
        else:
            rgb = self._file_frame(index)
        if hasattr(self, "size") and tuple(rgb.shape[:2]) != self.size:
            raise ImageError(f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 {self.size[1]}x{self.size[0]}")
        self._cached = (index, rgb)
        return rgb

    def _file_frame(self, index: int) -> np.ndarray:
        import cv2

        if index != self._next:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            raise ImageError(f"{self.name}: cannot decode frame {index}")
        self._next = index + 1
        return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    def _stream_frame(self, index: int) -> np.ndarray:
        """Read on to frame ``index`` (the last frame read is :meth:`frame`'s cache; earlier ones are gone)."""
        if index < self._next:
            raise ImageError(
                f"{self.name} is a camera or stream: frames come in order (asked {index} after {self._next - 1})"
            )
        while self._next <= index:
            frame = next(self._stream_iter, None)
            if frame is None:
                self.num_frames = self._next
                raise ImageError(f"{self.name} ended after {self._next} frames")
            rgb, self._next = frame.rgb, self._next + 1
        return rgb

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
        if self._stream is not None:
            self._stream.capture.release()


def _frame_folder(folder: Path) -> list[Path]:
    """The JPEG frames of ``folder`` in frame-number order (SAM 2's video format: ``<number>.jpg``)."""
    frames = [p for p in folder.iterdir() if p.suffix in FRAME_EXTENSIONS]
    if not frames:
        raise ImageError(f"{folder} holds no JPEG frames (SAM 2's video folders hold 00000.jpg, 00001.jpg, ...)")
    try:
        return sorted(frames, key=lambda p: int(p.stem))
    except ValueError:
        raise ImageError(
            f"{folder}: frame files must be named by their number (00000.jpg, 00001.jpg, ...), found "
            f"{next(p.name for p in frames if not p.stem.isdigit())}"
        ) from None


def _pil_frame(path: Path) -> np.ndarray:
    """A JPEG frame decoded by Pillow, as SAM 2 reads its frame folders (OpenCV's decoder may differ by
    one level in a few pixels)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise ImageError(f"cannot decode frame {path}: {exc}") from None
