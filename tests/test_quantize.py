"""`segedge quantize`: int8 on both backends, gated on held-out images, recorded in the manifest,
picked by `auto`; real accuracy on COCO-mini; a missed gate writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED, _need
from export_cache import linked_copy
from helpers import OV_HINTS, VNNI, ZEN4, matched_iou
from segedge.errors import BackendError, SegedgeError
from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES
from segedge.export.quantize import quantize_folder
from segedge.export.quantizers import candidate_folder
from segedge.export.quantize_calibration import SAM_PROMPTS_PER_IMAGE, calibration_inputs, split_images
from segedge.export.quantize_recipes import attention_products, coordinate_nodes, recipes, yolo_decode_nodes
from segedge.fileio import sha256_file
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.runtime.backends import BACKENDS
from segedge.runtime.cpu import cpu_capabilities
from segedge.runtime.fastsam import FastSam
from segedge.runtime.precision import alternative_precision, int8_float_parts


COCO128 = SHARED / "coco128-seg" / "data.yaml"


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def int8_folder(real_folder_640, shared_images, tmp_path_factory, ov_cache):
    """The real YOLOv8n-seg folder (640) with int8 for both backends, calibrated on the shared photos and gated on
    coco128-seg's mask mAP50-95 (`--val`): agreement on one held-out photo at ultralytics' conf 0.25 measured
    0.896 (OpenVINO) and 0.885 (ONNX Runtime) for int8s that lose 0.003 and 0.008 mask mAP50-95 on 562 objects."""
    folder = tmp_path_factory.mktemp("q") / "yolov8n-int8"
    linked_copy(real_folder_640, folder)
    section = quantize_folder(folder, shared_images, val_data=_need(COCO128), log=lambda line: print(line))
    return folder, section


def test_split_holds_out_enough_images_and_never_tunes_on_them():
    from segedge.evaluation.gate_stats import MIN_HELD_OUT_IMAGES as least

    paths = [f"{i}.jpg" for i in range(128)]  # the default calibration set's size: a fifth (25) held out
    calib, tuning, held = split_images(paths)
    assert held == paths[-25:] and tuning == paths[-50:-25] and calib == paths[:-50]
    paths = [f"{i}.jpg" for i in range(40)]  # a fifth is 8: the least a gate needs is held out instead
    calib, tuning, held = split_images(paths)
    assert len(held) == least and held == paths[-least:] and len(tuning) == (40 - least) // 4
    assert not set(tuning) & set(held) and not set(calib) & set(tuning) and calib + tuning + held == paths
    assert split_images(paths, subset=3)[0] == paths[:3]
    # with --val the labelled data gates: a fifth is held out for the agreement record, at least one
    assert split_images(paths[:11], gate_elsewhere=True) == (paths[:9], [], paths[9:11])
    assert split_images(paths[:6], min_held_out=1) == (paths[:5], [], paths[5:6])  # the expert's override
    with pytest.raises(SegedgeError, match=rf"quantize needs {least + 1} or more images here \(got 11\).*--val DATA"):
        split_images(paths[:11])  # the 6 photos + 5 COCO images: 2 held out said nothing
    with pytest.raises(SegedgeError, match="needs 2 or more images"):
        split_images(paths[:1], min_held_out=1)


def test_accuracy_control_runs_only_on_a_miss_it_closed_before():
    """The measured misses (docs/precision.md): 0.951 against 0.97 closed, 0.889 and 0.865 did not (skipped now,
    with the reason and what to do instead); nothing to tune on is said too."""
    from segedge.export.quantizers import MAX_ACCURACY_CONTROL_GAP, accuracy_control_skip

    assert MAX_ACCURACY_CONTROL_GAP == 0.05
    assert accuracy_control_skip(0.951, 0.97, 16) is None
    assert accuracy_control_skip(0.921, 0.97, 16) is None  # at the limit (0.049 short)
    for score, short in ((0.889, "0.081"), (0.865, "0.105")):
        why = accuracy_control_skip(score, 0.97, 16)
        assert why.startswith(f"{short} short: accuracy control is tried on misses up to 0.05") and "bf16" in why
    assert accuracy_control_skip(0.951, 0.97, 0) == "too few images to set aside for accuracy control"


def test_lower_bound_is_students():
    """The gate's lower 95% bound: one-sided Student t, checked against numbers computed by hand (scipy's t.ppf)."""
    from segedge.evaluation.gate_stats import lower_bound, summarise, t95

    assert (t95(1), t95(9), t95(15), t95(17), t95(500)) == (6.314, 1.833, 1.753, 1.753, 1.645)
    values = [0.9, 1.0, 0.95, 0.99, 0.97]  # mean 0.962, sd 0.03962
    assert abs(lower_bound(values) - (0.962 - 2.132 * 0.039623 / 5**0.5)) < 1e-5
    assert lower_bound([0.9]) == 0.9 and lower_bound([]) == 0.0
    rows = [{"points": 0.9, "boxes": 1.0}, {"points": 1.0, "boxes": 1.0}]
    summary = summarise(rows)
    assert summary["points"] == 0.95 and summary["images"] == 2 and summary["mean_gate"] == 0.95
    assert summary["gate"] == summary["lower_bound"]["points"] == round(0.95 - 6.314 * 0.070711 / 2**0.5, 5)
    assert "objects" not in summary  # rows without counts (older callers): none claimed
    counted = summarise([dict(r, objects=n) for r, n in zip(rows, (7, 5))])
    assert counted["objects"] == 12 and counted["lower_bound"] == summary["lower_bound"]  # a count, not a score


def test_manifest_records_the_gated_int8(int8_folder, shared_images):
    folder, section = int8_folder
    loaded = load_model_folder(folder)  # every listed file, int8 ones included, re-hashed
    int8 = loaded.manifest.quantized["int8"]
    assert int8 == json.loads(json.dumps(section))
    passing = _passing_backends()
    assert loaded.manifest.int8_backends() == passing
    for backend in set(BACKENDS) - set(passing):  # rejected by the mAP gate, with its numbers
        assert int8["rejected"][backend]["val"]["drop"] > 0.01 and backend not in int8["graphs"]["model"]
    names = [int8["graphs"]["model"][b] for b in passing]
    for name in names + [n.replace(".xml", ".bin") for n in names if n.endswith(".xml")]:
        assert loaded.manifest.files[name]["sha256"] == sha256_file(folder / name)
    assert "val mask_mAP50-95 drop <= 0.01" in int8["gate"]["decided_by"]
    for backend in passing:
        measured = int8["agreement"][backend]  # recorded beside the val verdict that decided
        assert set(measured) >= {"everything", "points", "boxes", "gate", "method"} and measured["passed"]
        assert measured["cpu_class"] == cpu_capabilities().precision_class  # where the gate was measured
        assert measured["gate"] == min(measured["everything"], measured["points"], measured["boxes"]) > 0.8
        assert measured["images"] == 1 and int8["gate"]["held_out_images"] == 1  # one image: its bound is its value
        # the objects compared: f32's masks on the held-out image ("everything" matches them all)
        held = next(p for p in shared_images if p.name == int8["calibration"]["held_out"][0]["name"])
        assert (
            measured["objects"]
            == len(FastSam(folder, "openvino", precision="f32").everything(read_image(held)).masks)
            > 0
        )
        val = int8["val"][backend]
        assert val["metric"] == "mask_mAP50-95" and val["data"]["instances"] == 562 and val["passed"]
        assert val["drop"] == pytest.approx(val["f32"] - val["value"], abs=2e-5) and val["drop"] <= 0.01
        assert abs(val["f32"] - 0.3562) < 0.001  # f32 is f32: the val test's number (ultralytics 0.3561)
    calib = int8["calibration"]
    assert calib["count"] == len(shared_images) - 1 and len(calib["held_out"]) == 1
    by_name = {p.name: p for p in shared_images}
    for item in calib["images"] + calib["held_out"]:
        assert item["sha256"] == sha256_file(by_name[item["name"]])
    assert {"nncf", "openvino", "onnxruntime"} <= set(int8["tools"])
    assert int8["gate"]["min"] == 0.97 and set(int8["rejected"]) == set(BACKENDS) - set(passing)
    cpu = cpu_capabilities()
    bf16 = loaded.manifest.quantized.get("bf16", {}).get("records", {}).get(cpu.precision_class)
    if cpu.native_bf16:  # bf16 gated on the same held-out images, and recorded with this CPU's class
        assert bf16["held_out"] == [p["name"] for p in calib["held_out"]] and bf16["min"] == 0.97
        assert (
            bf16["gate"] == min(bf16["agreement"].values()) > 0.9
        )  # agreement recorded; with --val the metric decides
        assert bf16["passed"] == bf16["val"]["passed"] and bf16["val"]["drop"] <= 0.01
        if bf16["passed"]:  # timed against f32 beside its gate: auto runs bf16 only when clearly faster
            assert 0 < bf16["speed"]["bf16_ms"] < 60_000 and 0 < bf16["speed"]["f32_ms"] < 60_000
            # the relative spread of repeated timings, at least the assumed 3%; no upper bound: with the suite's other
            # worker on the second core a spread above 100% was measured (1.39), a fact about the machine, not segedge
            assert 0.03 <= bf16["speed"]["noise"] < float("inf")
    else:
        assert bf16 is None
    assert sorted(int8["speed"]) == passing  # int8 that passed, timed against what auto would otherwise run here
    for backend in passing:
        speed = int8["speed"][backend]
        alt = alternative_precision(backend, cpu, loaded.manifest)
        assert speed["cpu_class"] == cpu.precision_class and speed["compared_with"] == alt and speed["cpu"] == cpu.model
        assert 0 < speed["int8_ms"] < 60_000 and 0 < speed[f"{alt}_ms"] < 60_000
        print(f"{backend}: int8 {speed['int8_ms']} ms vs {alt} {speed[f'{alt}_ms']} ms per image")
    assert not list(folder.glob(".quantize-*"))


def _passing_backends() -> list[str]:
    """Whose int8 of the real YOLOv8n-seg passes the mAP gate on this kind of CPU. Without VNNI (AVX2 only) the
    int8 kernels saturate full 8-bit weights, so int8 is made with 7-bit weights there; ONNX Runtime's then lost
    0.020 mask mAP50-95 (> 0.01, rejected; OpenVINO's passed), on a CPU with VNNI both pass (0.003 and 0.008)."""
    return ["onnxruntime", "openvino"] if cpu_capabilities().int8_dot is not False else ["openvino"]


def _flat(outputs) -> list[np.ndarray]:
    """A network's outputs (arrays, or tuples of arrays) as one list of arrays."""
    flat = []
    for out in outputs:
        flat.extend(_flat(out) if isinstance(out, (tuple, list)) else [out])
    return flat


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_auto_runs_int8_and_it_agrees_on_unseen_images(int8_folder, coco_dir, backend):
    folder, _ = int8_folder
    auto = FastSam(folder, backend=backend)
    if backend not in _passing_backends():  # rejected by the gate: auto runs f32 and int8 says why it cannot
        assert auto.precision == "f32"
        with pytest.raises(BackendError, match=f"no int8 graphs for {backend}"):
            FastSam(folder, backend=backend, precision="int8")
        return
    int8 = FastSam(folder, backend=backend, precision="int8")
    f32 = FastSam(folder, backend=backend, precision="f32")
    assert int8.precision == "int8" and int8.backend.precision == "int8" and f32.precision == "f32"
    # What auto must run, stated from the records quantize wrote (not by asking explain_auto): int8 where it passed
    # its gates and was timed faster than the precision it was compared with beyond the measured noise; slower, or a
    # tie, runs the more accurate one (f32; bf16 unless int8's gate agreed better). On an AMX Xeon int8 and bf16 tie.
    manifest = load_model_folder(folder).manifest
    speed = manifest.quantized["int8"]["speed"][backend]
    alt = speed["compared_with"]
    faster = speed["int8_ms"] < speed[f"{alt}_ms"] * (1 - speed["noise"])
    tie = not faster and speed["int8_ms"] <= speed[f"{alt}_ms"] * (1 + speed["noise"])
    bf16_gate = manifest.quantized.get("bf16", {}).get("records", {}).get(speed["cpu_class"], {}).get("gate", 1.0)
    int8_more_accurate = alt == "bf16" and manifest.quantized["int8"]["agreement"][backend]["gate"] > bf16_gate
    expected = "int8" if faster or (tie and int8_more_accurate) else alt
    assert auto.precision == expected, (speed, auto.precision)
    # ... and the graph that ran is that precision's: auto's outputs are the explicit precision's, bit for bit
    tensor = f32.preprocess(read_image(next(p for p in sorted((coco_dir / "images").glob("*.jpg")))))[0]
    ran = FastSam(folder, backend=backend, precision=expected)
    outputs, explicit, reference = (_flat(m.infer(tensor)) for m in (auto, ran, f32))
    assert len(outputs) == len(explicit) == len(reference) >= 2  # the head's outputs and the prototypes
    for got, want in zip(outputs, explicit):
        np.testing.assert_array_equal(got, want)
    differs = [np.abs(a.astype(np.float32) - b.astype(np.float32)).max() > 0 for a, b in zip(outputs, reference)]
    assert any(differs) is (expected != "f32")  # int8 (or bf16) really is not the f32 graph
    fastsam = dict(conf=0.4, iou=0.9, agnostic=True)  # the thresholds these numbers were measured at
    ious = [
        matched_iou(int8.everything(p, **fastsam).masks, f32.everything(p, **fastsam).masks)
        for p in sorted((coco_dir / "images").glob("*.jpg"))
    ]
    print(
        f"{backend} int8 vs f32 on COCO-mini (never calibrated on): matched IoU {np.mean(ious):.4f} (min {min(ious):.4f})"
    )
    # Measured with 5 calibration photos: OpenVINO 0.943 (0.948 before the uint8 input), ONNX Runtime 0.98 (a mask crossing the
    # confidence threshold costs a whole mask in "everything"; 6 photos gave OpenVINO 0.963).
    assert np.mean(ious) >= 0.93


def test_int8_float_layers_run_as_gated(int8_folder, tmp_path):
    """The float layers of OpenVINO's int8 run in what quantize gated them in (``float_parts``): bf16 is tried only
    where the CPU runs it natively and bf16 passed its own gate here; the compiled graph's hint follows the record,
    and a CPU of another class (or ONNX Runtime) runs them in f32."""
    folder, _ = int8_folder
    manifest = load_model_folder(folder).manifest
    cpu = cpu_capabilities()
    bf16 = (manifest.quantized.get("bf16") or {}).get("records", {}).get(cpu.precision_class) or {}
    parts = manifest.quantized["int8"]["agreement"]["openvino"]["float_parts"]
    if not (cpu.native_bf16 and bf16.get("passed")):
        assert parts == "f32"
    print(f"int8 float layers: {parts} (native bf16 {cpu.native_bf16}, bf16 gate passed {bf16.get('passed')})")
    int8 = FastSam(folder, "openvino", precision="int8", cache_dir=False)
    hint = str(int8.backend._compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert int8.float_parts == parts and hint in OV_HINTS[parts]
    assert int8.backend.precision == "int8" and int8.backend.float_parts == parts
    other = VNNI if cpu.precision_class != VNNI.precision_class else ZEN4
    assert int8_float_parts(manifest, "openvino", other) == "f32"
    if "onnxruntime" in manifest.int8_backends():
        assert FastSam(folder, "onnxruntime", precision="int8").float_parts == "f32"
    # the same int8 files recorded as gated with bf16 float layers here: compiled so where bf16 is native, cached apart
    # from the f32-hinted int8 (OpenVINO's cache key ignores the hint)
    forged = candidate_folder(load_model_folder(folder), manifest.quantized["int8"]["graphs"], "bf16")
    bf16_parts = FastSam(forged, "openvino", precision="int8", cache_dir=tmp_path)
    native = bool(cpu.native_bf16)
    hint = str(bf16_parts.backend._compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert bf16_parts.float_parts == ("bf16" if native else "f32") and hint in OV_HINTS[bf16_parts.float_parts]
    assert [p.name for p in tmp_path.iterdir()] == ["int8-bf16" if native else "int8"]


def test_a_missed_bf16_float_layers_gate_falls_back_to_f32(monkeypatch):
    """quantize's int8 gate with bf16 float layers below the threshold measures the same files with f32 float layers,
    and records what passed; ONNX Runtime and a CPU where bf16 did not pass are measured once, in f32."""
    from types import SimpleNamespace

    from segedge.export import quantize

    opened = []
    monkeypatch.setattr(quantize, "candidate_folder", lambda folder, files, parts: parts)
    monkeypatch.setattr(quantize, "open_model", lambda parts, backend, **kw: opened.append(parts) or parts)
    scores = {"bf16": 0.95, "f32": 0.985}  # the gate: the worst prompt type's bound
    monkeypatch.setattr(quantize, "_gate", lambda family, ref, candidate, *a: {"gate": scores[candidate]})
    run = SimpleNamespace(
        folder=None, family="yolo", held=[], progress=False, log=print, val=None, threshold=0.97, bf16_passed=True
    )
    candidate, measured, parts, verdict = quantize._gate_int8(run, "openvino", {}, None, 0.0)
    assert opened == ["bf16", "f32"] and parts == candidate == "f32" and measured["gate"] == 0.985 and verdict is None
    scores["bf16"] = 0.98
    opened.clear()
    assert quantize._gate_int8(run, "openvino", {}, None, 0.0)[2] == "bf16" and opened == ["bf16"]
    opened.clear()
    assert quantize._gate_int8(run, "onnxruntime", {}, None, 0.0)[2] == "f32" and opened == ["f32"]
    # --val: the metric decides f32 float layers, but bf16 ones must also pass the agreement gate (YOLOv8n-seg's int8
    # with them lost no mAP and agreed 0.75 on unseen photos)
    judged = []
    run.val = SimpleNamespace(verdict=lambda ref, candidate, *a: judged.append(candidate) or {"passed": True})
    scores["bf16"] = 0.89
    opened.clear()
    candidate, measured, parts, verdict = quantize._gate_int8(run, "openvino", {}, None, 0.0)
    assert opened == ["bf16", "f32"] and judged == ["f32"] and parts == "f32" and verdict == {"passed": True}
    scores["bf16"], judged[:], opened[:] = 0.98, [], []
    assert quantize._gate_int8(run, "openvino", {}, None, 0.0)[2] == "bf16" and judged == opened == ["bf16"]
    run.bf16_passed, run.val = False, None
    opened.clear()
    assert quantize._gate_int8(run, "openvino", {}, None, 0.0)[2] == "f32" and opened == ["f32"]


def test_bind_swaps_the_compiled_graph(int8_folder, shared_images):
    """What accuracy control relies on: binding another compiled model makes a runtime model run it."""
    folder, _ = int8_folder
    int8 = FastSam(folder, backend="openvino", precision="int8", cache_dir=False)
    f32 = FastSam(folder, backend="openvino", precision="f32", cache_dir=False)
    tensor = f32.preprocess(read_image(shared_images[0]))[0]
    before = int8.infer(tensor)[1]  # prototypes
    assert np.abs(before - f32.infer(tensor)[1]).max() > 0  # int8 really differs
    int8.graph_backends["model"].bind(f32.backend._compiled)
    np.testing.assert_array_equal(int8.infer(tensor)[1], f32.infer(tensor)[1])
    assert int8.graph_backends == {"model": int8.backend}


def test_int8_quality_against_ground_truth(int8_folder, coco128, real_640_f32_val):
    """Real accuracy, not only agreement (issue 9's target, now in the field's metric): OpenVINO int8 mask mAP50-95
    within 0.01 of f32 on coco128-seg (562 objects, never calibrated on), measured again by `segedge val`'s measurement
    (:func:`segedge.evaluation.val.evaluate`, what run_val runs per row). (Its COCO-mini stand-in, best-match IoU on 27
    objects, turned on two objects near the threshold: f32 0.4114 vs int8 0.3512 with the same recipe.) f32's value is
    the session's run_val of the same folder (``real_640_f32_val``, which test_val holds to ultralytics' own val), and
    both values quantize recorded are these, recomputed."""
    from segedge.evaluation.datasets import load_dataset
    from segedge.evaluation.val import evaluate
    from segedge.runtime.model_base import open_model

    folder = load_model_folder(int8_folder[0])  # every file re-hashed, as run_val loads it
    data = load_dataset(coco128)
    assert len(data.samples) == real_640_f32_val["data"]["images"] == 80 and data.instance_count == 562
    model = open_model(folder, "openvino", precision="int8")
    assert model.precision == "int8"
    int8 = evaluate(model, folder.manifest.family, data)[0]["mask_mAP50-95"]
    (f32_row, *_) = real_640_f32_val["rows"]
    assert (f32_row["backend"], f32_row["precision"]) == ("openvino", "f32")
    f32 = f32_row["metrics"]["mask_mAP50-95"]
    print(f"coco128-seg mask mAP50-95: f32 {f32:.4f}, int8 {int8:.4f}")
    assert f32 > 0.3 and f32 - int8 <= 0.01
    recorded = folder.manifest.quantized["int8"]["val"]["openvino"]
    assert int8 == pytest.approx(recorded["value"], abs=1e-4) and f32 == pytest.approx(recorded["f32"], abs=1e-4)


@pytest.fixture(scope="module")
def coco128():
    return _need(COCO128)


def test_missed_gate_writes_nothing(real_folder_640, shared_images, tmp_path):
    folder = tmp_path / "m"
    linked_copy(real_folder_640, folder)
    before = _snapshot(folder)
    with pytest.raises(
        SegedgeError, match=r"missed the accuracy gate 0.9999 on every backend \(openvino 0\.9\d+ \(short by 0\.0\d+\)"
    ):
        quantize_folder(
            folder,
            shared_images[:4],
            min_held_out=1,
            min_iou=0.9999,
            accuracy_control=False,
            backends=("openvino",),
            log=lambda _: None,
        )
    after = _snapshot(folder)
    manifest_before, manifest_after = (json.loads(x.pop("segedge.json")) for x in (before, after))
    assert after == before  # no int8 file added, changed or left behind (no staging folder)
    # the manifest changed only by the bf16 measurement (on CPUs with native bf16): bf16 failed the same 0.9999 gate
    bf16 = manifest_after.get("quantized", {}).pop("bf16", None)
    assert manifest_after == manifest_before
    if cpu_capabilities().native_bf16:
        assert [r["passed"] for r in bf16["records"].values()] == [False]
    else:
        assert bf16 is None


def _weight_range(onnx_path) -> int:
    """The largest magnitude of the int8 weight initializers of a quantized ONNX graph (127: full 8 bits)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    values = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(values) >= 20  # the network's weights, not a stray constant
    return max(int(np.abs(v.astype(np.int16)).max()) for v in values)


def test_requantize_replaces_the_previous_int8_and_makes_7bit_weights_without_vnni(
    int8_folder, shared_images, tmp_path, emulate_cpu
):
    """Quantizing again replaces the previous int8 files; here as on a CPU without VNNI (emulated: segedge's flags,
    which decide the recipe), whose int8 kernels saturate full 8-bit weights: the weights are made with 7 bits
    (ONNX Runtime's reduce_range: |w| <= 64, where the fixture's int8, made for this machine, reaches 127 if it has
    VNNI; on a CPU without, the fixture's weights are 7-bit already, the same range) and the record says so."""
    folder = tmp_path / "again"
    linked_copy(int8_folder[0], folder)
    before = load_model_folder(folder).manifest
    old = set(before.files)
    full = {
        _weight_range(folder / f)
        for g in before.quantized["int8"]["graphs"].values()
        for b, f in g.items()
        if b == "onnxruntime"
    }
    from segedge.runtime.cpu import cpu_capabilities

    machine_dot = cpu_capabilities().int8_dot  # the fixture's recipe: full 8 bits only where this CPU has VNNI
    cpu = emulate_cpu("plain")
    assert cpu.int8_dot is False and cpu.precision_class == "plain"
    quantize_folder(
        folder, shared_images[:3], backends=("onnxruntime",), min_iou=0.5, min_held_out=1, log=lambda _: None
    )  # 2 photos calibrate
    m = load_model_folder(folder).manifest
    assert m.int8_backends() == ["onnxruntime"]
    int8_files = {n for n in m.files if ".int8-" in n}
    assert len(int8_files) == 1 and not (int8_files & old)
    assert sorted(p.name for p in folder.iterdir() if ".int8-" in p.name) == sorted(int8_files)  # old ones deleted
    assert m.quantized["int8"]["calibration"]["count"] == 2
    assert m.quantized["int8"]["agreement"]["onnxruntime"]["cpu_class"] == "plain"
    assert m.quantized["int8"]["recipe"]["model"]["onnxruntime"]["reduce_range"] is True
    seven = _weight_range(folder / next(iter(int8_files)))
    print(f"int8 weight range: {full} on this CPU's own recipe, {seven} without VNNI (emulated)")
    assert seven <= 64
    if machine_dot:
        assert full == {127}
    else:  # 7-bit already; or none: on an AVX2-only Zen 4 the fixture's 7-bit int8 lost 0.020 mask mAP, not written
        assert max(full, default=0) <= 64


def test_recipes_keep_coordinates_float(real_folder_640, real_checkpoint, sam_tiny_folder, tmp_path):
    import onnx

    from segedge.export.fastsam import export_fastsam

    # the default outputs are undecoded: the head's own convolutions (all int8) and layout ops only
    yolo = onnx.load(str(real_folder_640 / "model.onnx"))
    decode = yolo_decode_nodes(yolo)
    assert {n.op_type for n in yolo.graph.node if n.name in decode} <= {"Reshape", "Transpose", "Concat"}
    assert not any(n.op_type == "Conv" and n.name in decode for n in yolo.graph.node)
    # a graph that decodes boxes itself (the channels_last layout): the decoding stays float
    cl = export_fastsam(real_checkpoint, tmp_path / "cl", imgsz=256, output_layout="channels_last")
    yolo = onnx.load(str(cl / "model.onnx"))
    decode = yolo_decode_nodes(yolo)
    ops = {n.op_type for n in yolo.graph.node if n.name in decode}
    assert {"Softmax", "MatMul", "Sub", "Add", "Mul"} <= ops, ops  # DFL expectation, ltrb -> xywh, times stride
    assert not any(b in n for n in decode for b in ("/cv2.", "/cv3.", "/cv4.", "/proto/"))
    decoder = onnx.load(str(sam_tiny_folder / "decoder.onnx"))
    coords = coordinate_nodes(decoder, "point_coords")
    ops = {n.name: n.op_type for n in decoder.graph.node}
    assert {"Sin", "Cos", "MatMul"} <= {ops[n] for n in coords}
    assert sum(ops[n] == "MatMul" for n in coords) == 1  # the Fourier projection, not the transformer's
    # products of two activations stay float: the two-way transformer's q·kᵀ and softmax·v (2 per attention, 7
    # attentions) and the mask product (hypernetwork outputs · upscaled embedding); linear layers (with a weight) not
    products = attention_products(decoder)
    assert len(products) == 15 and {ops[n] for n in products} == {"MatMul"}
    weights = {i.name for i in decoder.graph.initializer}
    assert not any(i in weights for n in decoder.graph.node if n.name in products for i in n.input)
    recipe = recipes("sam", {"encoder": None, "decoder": decoder})["decoder"]
    assert recipe.float_nodes == coords + products and recipe.describe()["nncf"]["float_products"] == 15


def test_sam_decoder_calibrated_on_sampled_prompts(sam_tiny_folder, shared_images):
    from segedge.runtime.sam import Sam

    ref = Sam(sam_tiny_folder, backend="onnxruntime", precision="f32")
    images = [read_image(p) for p in shared_images[:2]]
    data = calibration_inputs("sam", ref, images)
    assert len(data["encoder"]) == 2
    dec = data["decoder"]
    assert len(dec) == 2 * SAM_PROMPTS_PER_IMAGE * 4  # click, box, click + box, and a refinement of the click
    labels = np.concatenate([d["point_labels"].ravel() for d in dec])
    assert {1.0, 2.0, 3.0, -1.0, -2.0} <= set(labels.tolist())
    assert sum(float(d["has_mask_input"][0]) == 1.0 for d in dec) == 2 * SAM_PROMPTS_PER_IMAGE
    assert all(np.abs(d["mask_input"]).max() > 0 for d in dec if d["has_mask_input"][0] == 1.0)
    coords = np.concatenate([d["point_coords"][0, :1] for d in dec])
    assert len(np.unique(coords.round(1), axis=0)) > SAM_PROMPTS_PER_IMAGE  # real, varied clicks, not zeros
    # the split decoder's per-prompt part: the same prompts (without the refinements), on each image's tensors
    side = data["decoder_prompt"]
    whole = [d for d in dec if d["has_mask_input"][0] == 0.0]
    assert len(side) == len(whole) == 2 * SAM_PROMPTS_PER_IMAGE * 3
    for s_, w in zip(side, whole):
        assert set(s_) == set(ref.decoder_prompt.inputs)
        np.testing.assert_array_equal(s_["point_coords"], w["point_coords"])
        np.testing.assert_array_equal(s_["point_labels"], w["point_labels"])


def _cli(*args, flags=None):
    env = dict(os.environ, CI="true")
    if flags is not None:
        env["SEGEDGE_CPU_FLAGS"] = flags
    return subprocess.run(
        [sys.executable, "-m", "segedge", *map(str, args)], capture_output=True, text=True, env=env, timeout=900
    )


def _first_images(data_yaml, count: int, dest):
    """``dest``: an ultralytics dataset of the first ``count`` images of ``data_yaml``'s (with their labels and its
    data.yaml); returns its data.yaml."""
    import shutil

    images = sorted((data_yaml.parent / "images").glob("*.jpg"))[:count]
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True)
    for image in images:
        shutil.copy2(image, dest / "images" / image.name)
        shutil.copy2(data_yaml.parent / "labels" / f"{image.stem}.txt", dest / "labels" / f"{image.stem}.txt")
    shutil.copy2(data_yaml, dest / "data.yaml")
    return dest / "data.yaml"


def test_cli_quantize_info_segment(real_folder_640, shared_images, coco128, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "cli"
    linked_copy(real_folder_640, folder)
    val_data = _first_images(coco128, MIN_HELD_OUT_IMAGES, tmp_path / "val16")
    vnni = "avx2 avx512f avx512_vnni"  # a CPU class where int8 is the fast path (f32 is what it competes with)
    # The CLI's path, not int8's quality (test_int8_quality_against_ground_truth): one quantization with a low gate.
    # On a CPU without VNNI the flags above make quantize keep 8-bit weights, which saturate there (0.896 agreement
    # on an AVX2 EPYC): the default gate would add 140 s of NNCF's accuracy control on such a machine.
    # --subset: 2 of the photos calibrate; --val/--max-drop: the gate is the mask mAP50-95 drop on 16 of coco128-seg's
    # labelled images (the fewest auto accepts: the 6 photos alone hold out too few; int8's drop on all 80 is
    # test_int8_quality_against_ground_truth's), at most 0.5 (a wide gate: what is tested is that the options reach the
    # record)
    proc = _cli(
        "quantize", folder, "--calibration", shared_images[0].parent, "--backend", "openvino",
        "--min-iou", "0.8", "--no-accuracy-control", "--subset", "2",
        "--val", val_data, "--max-drop", "0.5", flags=vnni,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    section = load_model_folder(folder).manifest.quantized["int8"]
    photos = sorted(p.name for p in shared_images[0].parent.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    held = section["calibration"]["held_out"]
    assert section["calibration"]["count"] == 2 and len(held) == max(1, len(photos) // 5), section["calibration"]
    used = [i["name"] for i in section["calibration"]["images"]] + [i["name"] for i in held]
    assert len(set(used)) == len(used) and set(used) <= set(photos)  # calibration and held-out never overlap
    v = section["val"]["openvino"]
    assert v["metric"] == "mask_mAP50-95" and v["max_drop"] == 0.5 and v["passed"] and v["drop"] <= 0.5, v
    assert v["data"]["images"] == MIN_HELD_OUT_IMAGES and v["data"]["instances"] > 0 and v["f32"] > 0.1, v
    assert section["gate"]["decided_by"].startswith("val mask_mAP50-95 drop <= 0.5 on ")
    assert "int8 for openvino: val mask_mAP50-95 " in proc.stdout
    pattern = r"int8 for openvino: everything 0\.\d+, points 0\.\d+, boxes 0\.\d+ on 1 held-out images \((\d+) objects\) \(gate 0\.8;"
    found = re.search(pattern, proc.stdout)
    assert found and int(found.group(1)) > 0, proc.stdout  # the masks f32 found on the held-out photo
    assert "progress: 1/1 held-out images" in proc.stderr and "openvino int8 gate" in proc.stderr  # the gate's line
    # auto follows the speed measured during quantize (a timing: compared with the rule, not assumed; on an idle
    # machine int8 is clearly faster, under load the noise may make it a tie, which goes to f32)
    speed = load_model_folder(folder).manifest.quantized["int8"]["speed"]["openvino"]
    clearly = speed["int8_ms"] < speed["f32_ms"] * (1 - speed["noise"])
    auto = (
        "int8 (gated int8, measured faster than f32" if clearly else "f32 (int8 and f32 timed within the measured noise"
    )
    assert f"`--precision auto` on openvino here: {auto}" in proc.stdout, proc.stdout[-1500:]
    # info in this process, on the same VNNI class (segedge's flags: what is tested is its text, not a process start)
    from segedge.cli import main
    from segedge.runtime import cpu as cpu_module

    capsys.readouterr()
    with monkeypatch.context() as env:
        env.setenv("SEGEDGE_CPU_FLAGS", vnni)
        cpu_module._from_system.cache_clear()
        assert cpu_module.cpu_capabilities().precision_class == "vnni"
        assert main(["info", str(folder)]) == 0
    cpu_module._from_system.cache_clear()
    info = capsys.readouterr().out
    assert "int8 (" in info and "openvino: agreement with f32 everything" in info and "nncf" in info
    assert f"on 1 held-out images ({found.group(1)} objects)" in info, info
    assert "(vnni): int8 " in info and " ms per image" in info
    assert f"--precision auto on openvino: {auto}" in info, info
    assert "--precision auto on onnxruntime: f32 (no int8 for onnxruntime in the folder" in info
    proc = _cli("segment", shared_images[0], "--model", folder, "--out", tmp_path / "o", flags=vnni)
    assert proc.returncode == 0 and f"(openvino {auto.split()[0]})" in proc.stdout, proc.stderr
    # the refusals: in this process (what is tested is the message, not a process start)
    capsys.readouterr()
    args = ["segment", shared_images[0], "--model", folder, "--out", tmp_path / "o", "--backend", "onnxruntime"]
    assert main([*map(str, args), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "no int8 graphs for onnxruntime (it has int8 for openvino only)" in err
    assert main(["quantize", str(folder), "--calibration", str(shared_images[0].parent)]) == 2
    err = capsys.readouterr().err  # 6 photos: too few to hold out the 16 a gate needs, said before any work
    assert "error: quantize needs 17 or more images here (got 6)" in err and "--val DATA" in err, err
