"""The options a model family takes at run time, declared once (model_api's typed ``parameters()``, ultralytics'
one ``DEFAULT_CFG``): name, type, range, default and help of each. ``segedge segment`` builds its flags from them,
the HTTP API its request fields, and the runtime checks values with them, so a range or a default is written in
one place. A family lists the groups it takes in its :class:`~segedge.families.Family` entry (``parameters``).

Groups: ``"detection"`` (FastSAM / YOLO-seg thresholds; default None: the model folder's own) and
``"everything"`` (segment-anything's automatic mask generator; defaults are segment-anything's, a family's
``everything_defaults`` overrides some). Torch-, backend- and runtime-free.

>>> PARAMETERS["points_per_side"].check(16)
16
>>> check_values("everything", {"crop_layers": 1}, EVERYTHING_DEFAULTS)["crop_layers"]
1
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from segedge.errors import PromptError

#: Who takes each group, as a person reads it in an error line or a help text.
GROUP_TITLES = {"detection": "FastSAM / YOLO-seg", "everything": "SAM --everything"}


def short(value, limit: int = 80) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (error messages stay one short line)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value) -> bool:
    """Python and NumPy integers (both register as numbers.Integral; NumPy is not imported: the CLI's help stays
    light), not bools."""
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_fraction(value, name: str) -> float:
    """A threshold in ``[0, 1]`` (``conf``, ``iou``) as a float; raises :class:`PromptError`."""
    if not _is_number(value) or not 0 <= float(value) <= 1:
        raise PromptError(f"{name} must be a number from 0 to 1, got {short(value)}")
    return float(value)


def check_count(value, name: str) -> int:
    """A count of at least 1 (``max_det``) as an int; raises :class:`PromptError`."""
    if not _is_int(value) or value < 1:
        raise PromptError(f"{name} must be a whole number of at least 1, got {short(value)}")
    return int(value)


def check_whole(value, name: str) -> int:
    """A whole number of at least 0 (an area in pixels) as an int; raises :class:`PromptError`."""
    if not _is_int(value) or value < 0:
        raise PromptError(f"{name} must be a whole number of at least 0, got {short(value)}")
    return int(value)


def check_number(value, name: str) -> float:
    """Any finite number (a logit offset) as a float; raises :class:`PromptError`."""
    if not _is_number(value) or not math.isfinite(float(value)):
        raise PromptError(f"{name} must be a finite number, got {short(value)}")
    return float(value)


_CHECKS = {"fraction": check_fraction, "count": check_count, "whole": check_whole, "number": check_number}


@dataclass(frozen=True)
class Param:
    """One run-time option. ``kind``: ``"fraction"`` (0-1), ``"count"`` (>= 1), ``"whole"`` (>= 0),
    ``"number"`` (finite) or ``"choice"`` (one of ``choices``); ``default`` None means the model folder's;
    ``serve_max``: the largest value the HTTP server runs (a job on a shared box); ``keyword``: the runtime's
    name for it where that differs (segment-anything's ``crop_n_layers`` for ``crop_layers``)."""

    name: str
    group: str
    kind: str
    help: str
    default: Any = None
    choices: tuple = ()
    serve_max: int | None = None
    keyword: str | None = None

    @property
    def flag(self) -> str:
        """The CLI flag: ``--points-per-side``."""
        return "--" + self.name.replace("_", "-")

    @property
    def python_type(self) -> type:
        """``int`` or ``float``: what the CLI parses and the API declares."""
        return int if self.kind in ("count", "whole", "choice") else float

    def describe(self, more: str = "") -> str:
        """``"SAM --everything: grid points per side (default 32<more>)"``: the help the CLI and the API show."""
        default = ": the model folder's" if self.default is None else f" {self.default}"
        return f"{GROUP_TITLES[self.group]}: {self.help} (default{default}{more})"

    def check(self, value, serving: bool = False):
        """``value`` checked and converted (int or float); with ``serving`` also within :attr:`serve_max`.
        Raises :class:`PromptError` with one line naming the option, the range and the value."""
        if self.kind == "choice":
            allowed = [c for c in self.choices if not serving or self.serve_max is None or c <= self.serve_max]
            if not _is_int(value) or value not in allowed:
                words = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
                raise PromptError(f"{self.name} must be {words}, got {short(value)}")
            return int(value)
        checked = _CHECKS[self.kind](value, self.name)
        if serving and self.serve_max is not None and checked > self.serve_max:
            raise PromptError(
                f"{self.name} must be at most {self.serve_max} on this server (it shares its CPU), got {short(value)}"
            )
        return checked


_DECLARED = (
    Param("conf", "detection", "fraction", "confidence threshold, 0-1"),
    Param("iou", "detection", "fraction", "NMS IoU threshold, 0-1"),
    Param("max_det", "detection", "count", "most detections kept per image"),
    # segment-anything's SamAutomaticMaskGenerator defaults (crop_n_layers as crop_layers, min_mask_region_area as
    # min_region_area); a 64x64 grid is 4096 prompts, minutes on 2 cores: the server stops there
    Param("points_per_side", "everything", "count", "grid points per side", 32, serve_max=64),
    Param(
        "crop_layers",
        "everything",
        "choice",
        "also run on 4, 16, ... overlapping crops",
        0,
        choices=(0, 1, 2, 3),
        serve_max=2,
        keyword="crop_n_layers",
    ),
    Param(
        "min_region_area",
        "everything",
        "whole",
        "remove holes and islands smaller than this many pixels",
        0,
        keyword="min_mask_region_area",
    ),
    Param("pred_iou_thresh", "everything", "fraction", "keep masks whose predicted IoU is above this", 0.88),
    Param("stability_score_thresh", "everything", "fraction", "keep masks whose stability score is above this", 0.95),
    Param("stability_score_offset", "everything", "number", "logit offset of the stability score", 1.0),
    Param("box_nms_thresh", "everything", "fraction", "box IoU above which the lower-scored mask is dropped", 0.7),
)

#: Every declared option by name.
PARAMETERS: dict[str, Param] = {p.name: p for p in _DECLARED}

#: The "everything" group's defaults (segment-anything's): where ``segment --everything``, the server and
#: ``SamAutomaticMaskGenerator`` start.
EVERYTHING_DEFAULTS: dict[str, Any] = {p.name: p.default for p in _DECLARED if p.group == "everything"}


def group(name: str) -> tuple[Param, ...]:
    """The declared options of one group, in declaration order."""
    return tuple(p for p in _DECLARED if p.group == name)


def check_values(group_name: str, values: dict, defaults: dict, serving: bool = False, who: str = "") -> dict:
    """``values`` (name -> value, None = not given) checked against ``group_name``'s declarations, with
    ``defaults`` filled in; unknown names refused in one line naming what the group takes (``who`` says whose
    options they are). Returns every option of the group (``defaults`` may leave some None: the folder's)."""
    declared = {p.name: p for p in group(group_name)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise PromptError(
            f"{', '.join(unknown)}: not options of {who or GROUP_TITLES[group_name]} (it takes {', '.join(declared)})"
        )
    out = {}
    for name, param in declared.items():
        value = values.get(name)
        value = defaults.get(name) if value is None else value
        out[name] = None if value is None else param.check(value, serving)
    return out


def runtime_keywords(values: dict) -> dict:
    """Checked option values renamed to the runtime's keywords (``crop_layers`` -> ``crop_n_layers``)."""
    return {PARAMETERS[name].keyword or name: value for name, value in values.items()}
