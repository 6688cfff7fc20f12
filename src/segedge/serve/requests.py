"""The JSON bodies the HTTP API accepts (pydantic models: FastAPI checks them and lists them in the OpenAPI
schema). Unknown fields are refused (``extra="forbid"``); the "everything" options are declared in
:mod:`segedge.parameters`."""

# No ``from __future__ import annotations`` here: pydantic reads the annotations at run time.
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model

from segedge.parameters import PARAMETERS, Param

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
    text: str | None = Field(
        None,
        max_length=MAX_TEXT,
        description="FastSAM with --clip: a text prompt; YOLOE: the classes to find; SAM 3: the concepts to find, "
        "comma-separated (the box, if any, an example; points refine the instance the first object point is on)",
    )


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


def _option_field(param: Param):
    """A request field for a declared run-time option: its type and help from :mod:`segedge.parameters` (the service
    checks the range with the same declaration, answering 400 with one line)."""
    limit = "" if param.serve_max is None else f"; at most {param.serve_max} here"
    return (param.python_type | None, Field(None, description=param.describe(limit)))


#: ``POST /api/everything``'s body: the declared options of every family's everything mode, plus FastSAM's
#: ``retina``; the service checks that the model's family takes the ones given.
EverythingRequest = create_model(
    "EverythingRequest",
    __base__=EncodeRequest,
    retina=(bool | None, Field(None, description="FastSAM: masks at full resolution (default true)")),
    classes=(
        list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] | None,
        Field(None, max_length=80, description="YOLOE: the class names to find (default: the model's built-in ones)"),
    ),
    **{p.name: _option_field(p) for p in PARAMETERS.values()},
)
