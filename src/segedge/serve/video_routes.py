"""``/api/videos`` and ``/api/tracks`` of segedge serve: upload a clip, prompt objects on frames, track them as
background jobs. Module-level endpoints, as in :mod:`segedge.serve.app`: each finds the app's
:class:`~segedge.serve.video.VideoService` on ``request.app.state``."""

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations at run time.
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from segedge.serve.errors import ServiceError
from segedge.serve.requests import ResetRequest, TrackRequest, VideoPromptRequest
from segedge.serve.uploads import binary_body, body_bytes
from segedge.serve.video import VideoService

video_routes = APIRouter()


def _video(request: Request) -> VideoService:
    """The video service of the app answering ``request``."""
    return request.app.state.service.video


#: an endpoint's parameter that FastAPI fills with the app's video service
Videos = Annotated[VideoService, Depends(_video)]


def _model(video: VideoService, name: str | None) -> str:
    """``name``, or the first served model that tracks video."""
    if name is not None:
        return name
    if not video.models:
        raise ServiceError("no served model tracks video: serve a SAM 2 folder exported with its video graphs")
    return video.models[0]


_VIDEO_BODY = binary_body("the video file's bytes (MP4, MOV, WebM, MKV, AVI)", "video/*")


@video_routes.post(
    "/api/videos", summary="Upload a video (raw bytes as the body) -> video_id", openapi_extra=_VIDEO_BODY
)
async def upload_video(request: Request):
    video = _video(request)
    data = await body_bytes(request, video.store.max_bytes, "video", "clip.mp4")
    return await run_in_threadpool(video.store.add, data)


@video_routes.get("/api/videos/{video_id}", summary="Is this video still on the server? Its size and frame count")
def video_info(video_id: str, video: Videos):
    return video.store.get(video_id).info()


@video_routes.get("/api/videos/{video_id}/frames/{index}", summary="One frame of a video as JPEG")
def video_frame(video_id: str, index: int, video: Videos):
    # frames of an id never change (the id is the file's hash)
    return Response(
        video.store.frame_jpeg(video_id, index),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@video_routes.post("/api/videos/{video_id}/prompt", summary="Prompt an object on a frame -> every object's mask there")
def video_prompt(video_id: str, req: VideoPromptRequest, video: Videos):
    session = video.session(_model(video, req.model), video_id)
    return session.prompt(req.frame, req.obj_id, points=req.points, labels=req.labels, box=req.box)


@video_routes.post(
    "/api/videos/{video_id}/track", summary="Track the prompted objects forward or back (a background job)"
)
def video_track(video_id: str, req: TrackRequest, video: Videos):
    return video.start(_model(video, req.model), video_id, req.max_frames, req.reverse)


@video_routes.post("/api/videos/{video_id}/reset", summary="Forget one object (obj_id) or every object")
def video_reset(video_id: str, req: ResetRequest, video: Videos):
    session = video.session(_model(video, req.model), video_id)
    session.remove(req.obj_id)
    return {"video_id": video_id, "objects": session.state.obj_ids}


@video_routes.get("/api/tracks/{job_id}", summary="A tracking job's progress and its records from the since-th on")
def track_job(job_id: str, video: Videos, since: int = 0):
    return video.job(job_id).view(max(0, since))


@video_routes.delete("/api/tracks/{job_id}", summary="Stop a tracking job after the frame it is on")
def stop_track(job_id: str, video: Videos):
    job = video.job(job_id)
    job.stop.set()
    return job.view(len(job.records))
