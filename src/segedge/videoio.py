"""Video files, cameras and streams in; annotated video and JSON Lines out (OpenCV's FFmpeg backend).

A source is a video file (by extension), a camera index (``0``, ``1``, ...) or a stream URL
(``rtsp://``, ``http://``, ``https://``, ``udp://``, ``tcp://``). Frames come out as ``HxWx3 uint8`` RGB
with their index in the source and their time in seconds (the file's timestamps; for cameras, time
since the first frame). Outputs are written under a temporary name and renamed when the stream ends
(also on Ctrl-C, SIGTERM or ``--max-frames``), so a finished file is never half written: an
interrupted run leaves the frames it finished, complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from segedge.errors import ImageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
_STREAM = re.compile(r"^(rtsp|rtmp|http|https|udp|tcp)://", re.I)


def is_video_source(text: str | os.PathLike) -> bool:
    """True for a video file name, a camera index or a stream URL (see the module docstring)."""
    value = os.fspath(text)
    return value.isdigit() or bool(_STREAM.match(value)) or Path(value).suffix.lower() in VIDEO_EXTENSIONS


def is_live_source(text: str | os.PathLike) -> bool:
    """True for a camera index or a stream URL: frames come in order, their count is unknown."""
    value = os.fspath(text)
    return value.isdigit() or bool(_STREAM.match(value))


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` in the source (0-based), ``time_s`` seconds, ``rgb (H, W, 3)`` uint8."""

    index: int
    time_s: float
    rgb: np.ndarray


class VideoSource:
    """Frames of a video file, camera or stream. ``every``: keep one frame in N; ``max_frames``: stop
    after that many kept frames (a camera runs until then, or until Ctrl-C)."""

    def __init__(self, source: str | os.PathLike, every: int = 1, max_frames: int | None = None):
        import cv2

        value = os.fspath(source)
        self.name = value
        self.is_camera = value.isdigit()
        if not self.is_camera and not _STREAM.match(value):
            path = Path(value)
            if not path.is_file():
                raise ImageError(
                    f"video file not found: {path}" if not path.exists() else f"{path} is not a video file"
                )
        self.capture = _quietly(lambda: cv2.VideoCapture(int(value) if self.is_camera else value))
        if not self.capture.isOpened():
            what = f"camera {value}" if self.is_camera else value
            raise ImageError(
                f"cannot open {what} as a video (OpenCV's FFmpeg backend could not read it); "
                "check the path or URL, or convert the file to mp4"
            )
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 and not self.is_camera else None
        self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if every < 1:
            raise ImageError(f"--every must be at least 1, got {every}")
        self.every, self.max_frames = every, max_frames

    @property
    def kept_count(self) -> int | None:
        """How many frames will be kept, when known (files)."""
        if self.frame_count is None:
            return self.max_frames
        n = (self.frame_count + self.every - 1) // self.every
        return min(n, self.max_frames) if self.max_frames else n

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        start = time.perf_counter()
        index = kept = 0
        try:
            while self.max_frames is None or kept < self.max_frames:
                ok = self.capture.grab()
                if not ok:
                    return
                if index % self.every == 0:
                    ok, bgr = self.capture.retrieve()
                    if not ok or bgr is None:
                        return
                    if self.is_camera or not self.fps:
                        t = time.perf_counter() - start
                    else:
                        t = index / self.fps
                    yield Frame(index, t, np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                    kept += 1
                index += 1
        finally:
            self.capture.release()


def _quietly(open_capture):
    """Open a capture without OpenCV's own warnings on stderr (our error says what failed)."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        return open_capture()
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return open_capture()
    finally:
        logging.setLogLevel(level)


@contextlib.contextmanager
def one_frame_at_once():
    """Hold Ctrl-C and SIGTERM while one frame goes into every output (raised again right after), so that an
    interrupted run's video and JSON Lines hold the same frames. The Python handlers are swapped, not the thread's
    signal mask: OpenVINO's worker threads would take a masked process signal. Outside the main thread it holds
    nothing (handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None]
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)


def _partial(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


class _RenamedOnClose:
    """A file written under a hidden temporary name (``tmp``) and renamed to ``path`` when closed."""

    path: Path
    tmp: Path

    def _finish(self, keep: bool, written: int) -> Path | None:
        """Move the file into place if ``keep`` and anything was ``written``; else delete it."""
        if keep and written:
            os.replace(self.tmp, self.path)
            return self.path
        self.tmp.unlink(missing_ok=True)
        return None


class VideoWriter(_RenamedOnClose):
    """An mp4 (or .avi) of annotated frames, renamed into place by :meth:`close`."""

    def __init__(self, path: str | os.PathLike, fps: float, size_wh: tuple[int, int]):
        import cv2

        self.path = Path(path)
        self.tmp = _partial(self.path)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps if fps > 0 else 25.0, tuple(size_wh))
        if not self.writer.isOpened():
            raise ImageError(
                f"cannot write video {self.path}: OpenCV could not open an encoder for it; write .mp4 or .avi"
            )
        self.size_wh = tuple(size_wh)
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if (rgb.shape[1], rgb.shape[0]) != self.size_wh:
            rgb = cv2.resize(rgb, self.size_wh, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file and move it into place (``keep=False``: delete it)."""
        self.writer.release()
        return self._finish(keep, self.frames)


class JsonLinesWriter(_RenamedOnClose):
    """One JSON object per line, renamed into place by :meth:`close`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = _partial(self.path)
        self.handle = open(self.tmp, "w", encoding="utf-8", buffering=1)  # noqa: SIM115  (closed in close(); line-buffered)
        self.lines = 0

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.lines += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finish the file and move it into place (``keep=False``: delete it)."""
        self.handle.close()
        return self._finish(keep, self.lines)
