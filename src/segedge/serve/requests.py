"""The JSON bodies the HTTP API accepts (pydantic models: FastAPI checks them and lists them in the OpenAPI
schema). Unknown fields are refused (``extra="forbid"``); defaults of the "everything" options come from
:data:`segedge.families.EVERYTHING_DEFAULTS`."""

# No ``from __future__ import annotations`` here: pydantic reads the annotations at run time.
from pydantic import BaseModel, ConfigDict, Field

from segedge.families import EVERYTHING_DEFAULTS

MAX_POINTS = 64
MAX_TEXT = 200


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodeRequest(Strict):
    model: str | None = Field(None, description="model name from /api/models (default: the first)")
    image_id: str = Field(description="from POST /api/images")


class PredictRequest(EncodeRequest):
    points: list[tuple[float, float]] | None = Field(
        None, max_length=MAX_POINTS, description="[[x, y], ...] original pixels"
    )
    labels: list[int] | None = Field(
        None, max_length=MAX_POINTS, description="1 object, 0 background, one per point (default 1)"
    )
    box: tuple[float, float, float, float] | None = Field(None, description="[x1, y1, x2, y2] original pixels")
    multimask: bool = Field(False, description="SAM: three candidate masks instead of one")
    text: str | None = Field(None, max_length=MAX_TEXT, description="FastSAM with --clip: a text prompt")


class VideoModel(Strict):
    model: str | None = Field(None, description="a model that tracks video (default: the first that does)")


class VideoPromptRequest(VideoModel):
    frame: int = Field(ge=0, description="0-based frame number")
    obj_id: int = Field(1, ge=0, description="the object this prompt is for")
    points: list[tuple[float, float]] | None = Field(
        None, max_length=MAX_POINTS, description="[[x, y], ...] video pixels"
    )
    labels: list[int] | None = Field(
        None, max_length=MAX_POINTS, description="1 object, 0 background, one per point (default 1)"
    )
    box: tuple[float, float, float, float] | None = Field(None, description="[x1, y1, x2, y2] video pixels")


class TrackRequest(VideoModel):
    max_frames: int | None = Field(None, ge=1, description="frames to track from the first prompted one")
    reverse: bool = Field(False, description="track back from the last prompted frame towards frame 0")


class ResetRequest(VideoModel):
    obj_id: int | None = Field(None, description="the object to forget (default: every object)")


class EverythingRequest(EncodeRequest):
    conf: float | None = Field(None, description="FastSAM: confidence threshold 0-1")
    iou: float | None = Field(None, description="FastSAM: NMS IoU threshold 0-1")
    max_det: int | None = Field(None, description="FastSAM: most masks kept")
    retina: bool | None = Field(None, description="FastSAM: masks at full resolution (default true)")
    points_per_side: int | None = Field(
        None,
        description=f"SAM: grid points per side (default {EVERYTHING_DEFAULTS['points_per_side']}, at most 64)",
    )
    crop_layers: int | None = Field(
        None, description=f"SAM: crop layers 0-2 (default {EVERYTHING_DEFAULTS['crop_layers']})"
    )
    min_region_area: int | None = Field(None, ge=0, description="SAM: remove holes/islands below this many pixels")
    pred_iou_thresh: float | None = Field(
        None,
        description=f"SAM: keep masks whose predicted IoU is above (default {EVERYTHING_DEFAULTS['pred_iou_thresh']}; SAM 2 0.8)",
    )
    stability_score_thresh: float | None = Field(
        None,
        description=f"SAM: keep masks at least this stable (default {EVERYTHING_DEFAULTS['stability_score_thresh']})",
    )
    box_nms_thresh: float | None = Field(
        None,
        description=f"SAM: NMS IoU threshold between masks' boxes (default {EVERYTHING_DEFAULTS['box_nms_thresh']})",
    )
