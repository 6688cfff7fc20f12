"""What ``segedge serve`` does for video, without the web framework: upload a clip, prompt objects on its
frames, track them through it with SAM 2 in the background, read the results as they come.

- :class:`VideoStore` keeps uploaded clips as files in a folder of its own (deleted on :meth:`close`),
  at most ``max_videos`` of them (least recently used dropped first, with their sessions), and serves their
  frames as JPEG.
- A :class:`TrackSession` is one SAM 2 model on one clip: a :class:`~segedge.runtime.sam2_video.Sam2Video`
  state with SAM2VideoPredictor's verbs. Prompts go to :meth:`TrackSession.prompt` (the answer is every
  object's mask on that frame, as SAM 2 returns it); :meth:`TrackSession.start` tracks forward from the first
  prompted frame in a thread (a :class:`TrackJob`), one frame at a time, each frame taking the service's
  heavy-work slot so "everything" requests and other jobs take turns with it.
- Records are ``segedge track``'s JSON lines (:func:`segedge.runtime.track_output.frame_record`): per object
  ``id``, ``visible``, ``object_score``, ``area``, ``box`` (xyxy video pixels) and ``rle`` (COCO RLE at the
  clip's size).

Video ids are the first 32 hex digits of the sha256 of the uploaded bytes, as image ids are.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segedge.errors import ImageError, SegedgeError
from segedge.serve.errors import Busy, NotFound, ServiceError, TooLarge, UnsupportedMedia, upload_id

DEFAULT_MAX_VIDEO_BYTES = 256 * 2**20
DEFAULT_MAX_VIDEOS = 4
DEFAULT_MAX_TRACK_FRAMES = 600
VIDEO_ID = re.compile(r"^[0-9a-f]{32}$")
JOB_ID = re.compile(r"^[0-9]{1,12}$")
JOBS_KEPT = 16  # finished jobs whose records stay readable
JPEG_QUALITY = 90


def sniff_video(data: bytes) -> str:
    """The container of an uploaded clip from its first bytes: ``.mp4`` (MP4, MOV, M4V), ``.mkv`` (Matroska,
    WebM) or ``.avi``; raises :class:`UnsupportedMedia` for anything else."""
    head = bytes(data[:16])
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    raise UnsupportedMedia("not a video of an accepted type (MP4, MOV, WebM, MKV, AVI)")


@dataclass
class StoredVideo:
    """An uploaded clip: its file, size ``(H, W)``, frame count and frames per second."""

    video_id: str
    path: Path
    size: tuple[int, int]
    num_frames: int
    fps: float
    reader: object = None  # VideoFrames for the page's frames (its own capture: tracking has another)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict:
        h, w = self.size
        return {"video_id": self.video_id, "frames": self.num_frames, "width": w, "height": h, "fps": self.fps}


class VideoStore:
    """Uploaded clips on disk, bounded in count; frames as JPEG."""

    def __init__(
        self,
        *,
        max_videos: int = DEFAULT_MAX_VIDEOS,
        max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
        max_pixels: int = 0,
        on_evict=lambda video_id: None,
    ):
        self.folder: Path | None = None  # a private temp folder, made at the first upload
        self.max_videos, self.max_bytes, self.max_pixels = int(max_videos), int(max_bytes), int(max_pixels)
        self.videos: OrderedDict[str, StoredVideo] = OrderedDict()
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def add(self, data: bytes) -> dict:
        """Keep an uploaded clip: ``{video_id, frames, width, height, fps, cached}``."""
        from segedge.runtime.video_frames import VideoFrames

        video_id = upload_id(data, self.max_bytes, "video", "video")
        suffix = sniff_video(data)
        with self._lock:
            if video_id in self.videos:
                self.videos.move_to_end(video_id)
                return {**self.videos[video_id].info(), "cached": True}
        path = self._private_folder() / f"{video_id}{suffix}"
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        try:
            reader = VideoFrames(path, self.max_pixels or None)
        except ImageError as exc:
            path.unlink(missing_ok=True)
            raise ServiceError(str(exc).replace(str(path), "the video")) from None
        h, w = reader.size
        if self.max_pixels and h * w > self.max_pixels:
            reader.close()
            path.unlink(missing_ok=True)
            raise TooLarge(f"the video's frames are {w}x{h}, above the server's limit of {self.max_pixels} pixels")
        video = StoredVideo(video_id, path, (h, w), int(reader.num_frames), float(reader.fps), reader)
        with self._lock:
            self.videos[video_id] = video
            evicted = [self.videos.popitem(last=False) for _ in range(len(self.videos) - self.max_videos)]
        for old_id, old in evicted:  # outside the lock: a job on it may take a frame's time to stop
            self._drop(old_id, old)
        return {**video.info(), "cached": False}

    def _private_folder(self) -> Path:
        with self._lock:
            if self.folder is None:
                self.folder = Path(tempfile.mkdtemp(prefix="segedge-videos-"))
                weakref.finalize(self, shutil.rmtree, self.folder, True)  # also when close() is never called
            return self.folder

    def get(self, video_id: str) -> StoredVideo:
        if not isinstance(video_id, str) or not VIDEO_ID.match(video_id):
            raise ServiceError("video_id must be the 32 hex digits that POST /api/videos returned")
        with self._lock:
            video = self.videos.get(video_id)
            if video is not None:
                self.videos.move_to_end(video_id)
        if video is None:
            raise NotFound(
                f"video {video_id} is not on the server (never uploaded, or dropped for newer ones): upload it again"
            )
        return video

    def frame_jpeg(self, video_id: str, index: int) -> bytes:
        """Frame ``index`` (0-based) of a clip as JPEG bytes."""
        import cv2

        video = self.get(video_id)
        if not 0 <= index < video.num_frames:
            raise NotFound(f"frame {index} is outside the video (frames 0 to {video.num_frames - 1})")
        with video.lock:
            try:
                rgb = video.reader.frame(index)
            except ImageError as exc:
                raise ServiceError(str(exc).replace(str(video.path), "the video")) from None
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return buf.tobytes()

    def _drop(self, video_id: str, video: StoredVideo) -> None:
        self._on_evict(video_id)
        with video.lock:
            video.reader.close()
        video.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Forget every clip and delete the folder."""
        with self._lock:
            videos, self.videos = list(self.videos.items()), OrderedDict()
        for video_id, video in videos:
            self._drop(video_id, video)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class TrackJob:
    """One tracking run of a session: ``status`` running / done / stopped / error; ``records`` one per frame
    finished, in order."""

    job_id: str
    session: TrackSession
    start: int
    total: int
    reverse: bool = False
    status: str = "running"
    records: list = field(default_factory=list)
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def view(self, since: int = 0) -> dict:
        """The job as JSON: its progress and the records from index ``since`` on."""
        seconds = self.seconds if self.status != "running" else time.perf_counter() - self.started
        done = len(self.records)
        state = self.session.state
        # state.timings (ms) grows on the job's thread: list() copies it in one step
        per_frame = {k: round(v / done, 1) for k, v in list(state.timings.items())} if done else {}
        return {
            "job_id": self.job_id,
            "model": self.session.model_name,
            "video_id": self.session.video_id,
            "status": self.status,
            "error": self.error,
            "start_frame": self.start,
            "reverse": self.reverse,
            "total": self.total,
            "done": done,
            "seconds": round(seconds, 2),
            "frames_per_s": round(done / seconds, 3) if seconds > 0 and done else None,
            "ms_per_frame": per_frame,
            "since": since,
            "records": self.records[since:],
        }


class TrackSession:
    """One SAM 2 model tracking one stored clip (see the module doc). Prompts and tracking take turns: a
    prompt while a job runs is :class:`Busy`."""

    def __init__(self, model_name: str, tracker, video: StoredVideo):
        self.model_name, self.tracker, self.video_id = model_name, tracker, video.video_id
        self.state = tracker.init_state(video.path)
        self.lock = threading.Lock()
        self.job: TrackJob | None = None

    def _idle(self) -> None:
        """Raise :class:`Busy` while a job runs (called before taking :attr:`lock`, which the job holds, and after)."""
        if self.job is not None and self.job.status == "running":
            raise Busy(f"tracking job {self.job.job_id} is running on this video: stop it or wait for it")

    def prompt(self, frame: int, obj_id: int, points=None, labels=None, box=None) -> dict:
        """Set object ``obj_id``'s prompt on ``frame`` (it replaces that object's earlier prompt on that frame):
        ``points (N, 2)`` xy video pixels with ``labels`` (1 object, 0 background; default all 1), and/or a
        ``box`` xyxy. Returns the frame's record (every object's mask there)."""
        from segedge.errors import PromptError
        from segedge.runtime.prompt_args import api_clicks

        points, labels = api_clicks(points, labels)
        if points is None and box is None:
            raise PromptError("give points, a box or both")
        self._idle()
        with self.lock:
            self._idle()
            t0 = time.perf_counter()
            n, ids, logits = self.tracker.add_new_points_or_box(
                self.state, frame, obj_id, points=points, labels=labels, box=box
            )
            record = self._record(n, ids, logits)
        record["timings_ms"] = {"server": round((time.perf_counter() - t0) * 1e3, 2)}
        return record

    def remove(self, obj_id: int | None = None) -> None:
        """Forget one object (``obj_id``) or every object, with their prompts and results."""
        self._idle()
        with self.lock:
            self._idle()
            if obj_id is None:
                self.tracker.reset_state(self.state)
            else:
                self.state.objects.pop(obj_id, None)

    def start(self, job_id: str, max_frames: int, heavy: threading.Semaphore, reverse: bool = False) -> TrackJob:
        """Track forward from the first prompted frame (``reverse``: back from the last prompted frame, as
        ``segedge track --direction reverse``), at most ``max_frames`` frames, in a thread."""
        from segedge.errors import PromptError
        from segedge.runtime.sam2_video import tracking_passes

        self._idle()
        with self.lock:
            self._idle()
            prompted = [t for obj in self.state.objects.values() for t in (*obj.cond, *obj.temp_cond)]
            if not prompted:
                raise PromptError("no object has a prompt yet: click on an object first")
            direction = "reverse" if reverse else "forward"
            ((start, total, _),) = tracking_passes(prompted, self.state.num_frames, direction, max_frames)
            job = TrackJob(job_id, self, start, total, reverse)
            self.job = job
        threading.Thread(target=self._run, args=(job, heavy), name=f"segedge-track-{job_id}", daemon=True).start()
        return job

    def track_boxes(self, prompts: list, start: int, total: int, heavy: threading.Semaphore) -> dict:
        """In this thread (Label Studio's request): forget every object, prompt ``prompts`` ``[(frame, obj_id,
        box xyxy)]``, track ``total`` frames forward from ``start``. Returns ``{frame: {obj_id: (box xyxy (4,)
        float32, x2/y2 exclusive, or None for an empty mask, object score logit)}}``."""
        from segedge.postprocess.masks import RoiMasks

        self._idle()
        with self.lock:
            self._idle()
            self.tracker.reset_state(self.state)
            for frame, obj_id, box in prompts:
                self.tracker.add_new_points_or_box(self.state, frame, obj_id, box=box)
            steps = self.tracker.propagate_in_video(self.state, start_frame_idx=start, max_frame_num_to_track=total - 1)
            out = {}
            try:
                while (step := _next_under(heavy, steps)) is not None:
                    frame, ids, logits = step
                    masks = RoiMasks.from_dense(logits[:, 0] > 0)
                    boxes, areas = masks.extents(), masks.areas()
                    scores = self.tracker.object_scores(self.state, frame)
                    out[frame] = {o: (boxes[i] if areas[i] else None, scores[i]) for i, o in enumerate(ids)}
            finally:
                steps.close()
        return out

    def _run(self, job: TrackJob, heavy: threading.Semaphore) -> None:
        import logging

        with self.lock:
            self.state.timings.clear()
            frames = self.tracker.propagate_in_video(
                self.state, start_frame_idx=job.start, max_frame_num_to_track=job.total - 1, reverse=job.reverse
            )
            try:
                while not job.stop.is_set():
                    if (step := _next_under(heavy, frames)) is None:
                        break
                    job.records.append(self._record(*step))
                job.status = "stopped" if job.stop.is_set() else "done"
            except SegedgeError as exc:
                job.status, job.error = "error", str(exc)
            except MemoryError:
                job.status, job.error = "error", "the server ran out of memory while tracking"
            except Exception as exc:  # a server stays up: the job says what happened, the log has the rest
                logging.getLogger("segedge.serve").exception("tracking job %s failed", job.job_id)
                job.status, job.error = (
                    "error",
                    f"internal error ({type(exc).__name__}); the server log has the details",
                )
            finally:
                frames.close()
                job.seconds = time.perf_counter() - job.started

    def _record(self, frame: int, obj_ids: list, logits: np.ndarray) -> dict:
        from segedge.postprocess.masks import RoiMasks
        from segedge.runtime.track_output import frame_record

        masks = RoiMasks.from_dense(logits[:, 0] > 0)
        scores = self.tracker.object_scores(self.state, frame)
        return frame_record(self.video_id, frame, self.state.frames.fps, obj_ids, masks, scores)

    def close(self) -> None:
        if self.job is not None:
            self.job.stop.set()
        with self.lock:
            self.state.frames.close()


class VideoService:
    """Clips, tracking sessions and jobs for the served SAM 2 models with video graphs.

    ``trackers``: ``model name -> callable`` opening that model's :class:`Sam2Video` (called once, on the first
    video request for it); ``heavy``: the service's semaphore for long work.
    """

    def __init__(
        self, trackers: dict, heavy: threading.Semaphore, *, max_track_frames=DEFAULT_MAX_TRACK_FRAMES, **store
    ):
        self.store = VideoStore(on_evict=self._forget_video, **store)
        self._openers = dict(trackers)
        self._trackers: dict = {}
        self._sessions: dict[tuple[str, str], TrackSession] = {}
        self._jobs: OrderedDict[str, TrackJob] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.heavy = heavy
        self.max_track_frames = int(max_track_frames)

    @property
    def models(self) -> list[str]:
        return list(self._openers)

    def _tracker(self, model: str):
        with self._lock:
            if model not in self._trackers:
                self._trackers[model] = self._openers[model]()
            return self._trackers[model]

    def session(self, model: str, video_id: str) -> TrackSession:
        """The session of ``model`` on the stored clip ``video_id`` (made on first use)."""
        if model not in self._openers:
            others = ", ".join(self._openers) or "none (serve a SAM 2 folder exported with its video graphs)"
            raise ServiceError(f"model {model!r} does not track video; the models that do: {others}")
        video = self.store.get(video_id)
        key = (model, video_id)
        with self._lock:
            found = self._sessions.get(key)
        if found is not None:
            return found
        tracker = self._tracker(model)
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = TrackSession(model, tracker, video)
            return self._sessions[key]

    def start(self, model: str, video_id: str, max_frames: int | None = None, reverse: bool = False) -> dict:
        limit = self.max_track_frames if max_frames is None else min(int(max_frames), self.max_track_frames)
        if limit < 1:
            raise ServiceError(f"max_frames must be at least 1, got {max_frames}")
        session = self.session(model, video_id)
        with self._lock:
            job_id = str(next(self._ids))
        job = session.start(job_id, limit, self.heavy, reverse)
        with self._lock:
            self._jobs[job_id] = job
            finished = [k for k, j in self._jobs.items() if j.status != "running"]
            for k in finished[: max(0, len(finished) - JOBS_KEPT)]:
                del self._jobs[k]
        return job.view()

    def job(self, job_id: str) -> TrackJob:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise ServiceError("job_id must be the number POST /api/videos/{video_id}/track returned")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no tracking job {job_id} on this server (finished long ago, or never started)")
        return job

    def _forget_video(self, video_id: str) -> None:
        with self._lock:
            keys = [k for k in self._sessions if k[1] == video_id]
            sessions = [self._sessions.pop(k) for k in keys]
        for s in sessions:
            s.close()

    def close(self) -> None:
        """Stop every job and delete the stored clips."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
        self.store.close()


def _next_under(heavy: threading.Semaphore, steps):
    """The next tracked frame of ``steps`` (a generator), computed holding the service's heavy-work slot."""
    with heavy:
        return next(steps, None)
