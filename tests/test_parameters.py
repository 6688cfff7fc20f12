"""The run-time options declared once (segedge.parameters): the CLI's flags, the API's fields, the runtime's checks
and the families' groups all come from the declarations, and a value is refused the same way everywhere."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from segedge.cli.segment_options import add_segment_options, check_family_options, everything_options
from segedge.errors import PromptError, SegedgeError
from segedge.families import FAMILIES, family
from segedge.parameters import (
    EVERYTHING_DEFAULTS,
    GROUP_TITLES,
    PARAMETERS,
    check_values,
    group,
    runtime_keywords,
)
from segedge.serve.requests import EverythingRequest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segment", exit_on_error=False)
    add_segment_options(parser)
    return parser


def _args(*extra: str):
    return _parser().parse_args(["a.jpg", "--model", "models/x", *extra])


def test_every_group_is_declared_and_every_family_names_known_groups():
    assert set(GROUP_TITLES) == {p.group for p in PARAMETERS.values()}
    taken = [g for spec in FAMILIES.values() for g in spec.parameters]
    assert len(taken) >= 3 and set(taken) <= set(GROUP_TITLES)
    assert [p.name for p in family("fastsam").options()] == ["conf", "iou", "max_det"]
    assert [p.name for p in family("sam").options()] == list(EVERYTHING_DEFAULTS) and len(EVERYTHING_DEFAULTS) == 7
    assert family("clip").options() == ()
    assert family("sam2").everything_options()["pred_iou_thresh"] == 0.8  # the family's own default over the table


def test_cli_flags_and_api_fields_come_from_the_declarations():
    parser = _parser()
    flags = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for param in PARAMETERS.values():
        action = flags[param.flag]
        assert action.default is None  # None: the folder's or the family's default, filled in by check_values
        assert GROUP_TITLES[param.group] in action.help and param.help in action.help
    assert "(default 32)" in flags["--points-per-side"].help
    assert "SAM 2: 0.8" in flags["--pred-iou-thresh"].help and "SAM: 0.88" not in flags["--pred-iou-thresh"].help
    fields = EverythingRequest.model_fields
    assert set(fields) == {"model", "image_id", "retina", "classes", *PARAMETERS}  # classes: YOLOE, by name
    assert "at most 64 here" in fields["points_per_side"].description
    assert fields["crop_layers"].annotation == int | None and fields["conf"].annotation == float | None


@pytest.mark.parametrize(
    "name, good, bad, words",
    [
        (
            "conf",
            [0, 0.25, 1, np.float32(0.5)],
            [-0.1, 1.5, True, "0.3", float("nan")],
            "conf must be a number from 0 to 1",
        ),
        ("max_det", [1, 300, np.int64(7)], [0, -3, 2.5, True, None], "max_det must be a whole number of at least 1"),
        ("min_region_area", [0, 100], [-1, 1.5, False], "min_region_area must be a whole number of at least 0"),
        ("stability_score_offset", [-2, 0, 1.5], [float("inf"), "1", None], "must be a finite number"),
        ("crop_layers", [0, 1, 2, 3], [4, -1, 1.0, True], "crop_layers must be 0, 1, 2 or 3"),
    ],
)
def test_each_kind_checks_its_range(name, good, bad, words):
    param = PARAMETERS[name]
    for value in good:
        checked = param.check(value)
        assert checked == value and type(checked) is param.python_type
    for value in bad:
        with pytest.raises(PromptError, match=words):
            param.check(value)


def test_the_server_caps_what_shares_its_cpu():
    assert PARAMETERS["points_per_side"].check(500) == 500  # the CLI and the Python API run what they are given
    with pytest.raises(PromptError, match="points_per_side must be at most 64 on this server"):
        PARAMETERS["points_per_side"].check(500, serving=True)
    with pytest.raises(PromptError, match="crop_layers must be 0, 1 or 2, got 3"):
        PARAMETERS["crop_layers"].check(3, serving=True)


def test_check_values_fills_defaults_and_refuses_strangers():
    chosen = check_values("everything", {"crop_layers": 1, "box_nms_thresh": None}, family("sam2").everything_options())
    assert chosen == {**EVERYTHING_DEFAULTS, "pred_iou_thresh": 0.8, "crop_layers": 1}
    keywords = runtime_keywords(chosen)
    assert keywords["crop_n_layers"] == 1 and keywords["min_mask_region_area"] == 0 and len(keywords) == 7
    assert check_values("detection", {}, {"conf": 0.4, "iou": 0.9, "max_det": 300}) == {
        "conf": 0.4,
        "iou": 0.9,
        "max_det": 300,
    }
    with pytest.raises(PromptError, match=r"^conf, retina: not options of SAM everything \(it takes points_per_side"):
        check_values("everything", {"conf": 0.5, "retina": True}, EVERYTHING_DEFAULTS, who="SAM everything")


def test_segment_everything_options_reach_the_generator_keywords():
    args = _args("--everything", "--crop-layers", "0", "--points-per-side", "8", "--stability-score-offset", "-0.5")
    got = everything_options(args, "sam2")
    assert got["points_per_side"] == 8 and got["crop_n_layers"] == 0 and got["stability_score_offset"] == -0.5
    assert got["pred_iou_thresh"] == 0.8 and got["min_mask_region_area"] == 0  # sam2's default, the table's
    assert everything_options(_args("--everything"), "sam")["pred_iou_thresh"] == 0.88
    for bad, words in ((["--crop-layers", "5"], "invalid choice"), (["--stability-score-offset", "inf"], "finite")):
        with pytest.raises(argparse.ArgumentError, match=words):
            _args("--everything", *bad)


@pytest.mark.parametrize(
    "name, extra, words",
    [
        ("fastsam", ["--points-per-side", "8", "--multimask"], "--points-per-side, --multimask: SAM options"),
        ("sam", ["--conf", "0.3", "--point", "1,1"], "--conf: FastSAM options; models/x is a SAM folder, which takes"),
        ("sam2", ["--iou", "0.3", "--crop-layers", "1"], "^--iou: FastSAM options; models/x is a SAM 2 folder"),
        ("sam", ["--box-nms-thresh", "0.5", "--point", "1,1"], "--box-nms-thresh: options of --everything"),
        ("sam2", ["--everything", "--min-region-area", "10"], "--min-region-area is not supported for SAM 2"),
        ("clip", [], "does not segment images"),
    ],
)
def test_a_family_refuses_the_options_of_groups_it_does_not_take(name, extra, words):
    with pytest.raises(SegedgeError, match=words):
        check_family_options(_args(*extra), name)


def test_group_order_is_declaration_order():
    assert [p.name for p in group("detection")] == ["conf", "iou", "max_det"]
    assert all(p.default is None for p in group("detection"))
    assert all(p.default is not None for p in group("everything"))
