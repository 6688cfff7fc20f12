"""``segedge val``: what each precision of a model folder costs in the field's metric, on labelled data.

One run measures every backend x precision the folder can run here (f32 always; bf16 on OpenVINO when
the CPU runs it natively; int8 where the folder holds a gated int8), on the same images:

- FastSAM / YOLO-seg folders: box and mask mAP50-95 and mAP50 (:mod:`segedge.evaluation.yolo_val`,
  ultralytics' ``val`` with ``rect=False``); YOLOE folders the same on the data's class names (ultralytics' YOLOE
  val: its names are the text prompts; a prompt-free folder's vocabulary matched to them by name);
- SAM / MobileSAM / SAM 2 folders: box-prompt and centre-point mask mIoU (:mod:`segedge.evaluation.sam_val`).

Each row also has its drop against the same backend's f32 and the median milliseconds per image of
the network with its pre-processing (FastSAM) or of the encoder plus all the image's prompts (SAM).
Torch-free.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError
from segedge.evaluation import concept_val, sam_val, yolo_val
from segedge.evaluation.average_precision import MapAccumulator
from segedge.evaluation.datasets import Dataset, load_dataset, polygons_in_pixels
from segedge.families import FAMILIES, family_names
from segedge.families import family as family_spec
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.precisions import BF16, F32, INT8
from segedge.runtime.backends import installed_backends
from segedge.runtime.cpu import CpuCapabilities, cpu_capabilities
from segedge.runtime.model_base import open_model

# Per val protocol (a family's ``val_protocol`` in segedge.families): the metrics, the one that gates, and how.
METRICS = {
    "yolo_map": ("mask_mAP50-95", "mask_mAP50", "box_mAP50-95", "box_mAP50"),
    "sam_miou": ("box_mIoU", "point_mIoU"),
    "concept_map": ("mask_mAP50-95", "mask_mAP50", "box_mAP50-95", "box_mAP50"),
}
PRIMARY = {"yolo_map": "mask_mAP50-95", "sam_miou": "box_mIoU", "concept_map": "mask_mAP50-95"}
PROTOCOL = {
    "yolo_map": "ultralytics val (rect=False square letterbox, conf 0.001, iou 0.7, multi-label, max_det 300, "
    "masks at input/4; one-class folders class-agnostic)",
    "sam_miou": "SAM zero-shot: each object's box as the prompt (one mask), and one click at the point farthest from its "
    "boundary (highest-scored of three masks); mean IoU at the original resolution",
    "concept_map": "SAM 3: each class name a text prompt, every query a detection (score sigmoid(logit) x presence), "
    "the 100 best per image above 0.001, boxes and masks at the original resolution; ultralytics' AP",
}


def val_protocol(family: str) -> str:
    """The family's val protocol (a key of :data:`METRICS`), else :class:`SegedgeError`."""
    protocol = family_spec(family).val_protocol
    if protocol is None:
        measured = ", ".join(f.name for f in FAMILIES.values() if f.val_protocol)
        raise SegedgeError(f"val measures {measured} folders, not {family}")
    return protocol


def available_precisions(manifest, backend: str, cpu: CpuCapabilities) -> list[str]:
    """What ``val`` measures by default on ``backend``: f32, bf16 (OpenVINO, native bf16), int8 (gated in the folder)."""
    out = [F32]
    if backend == "openvino" and cpu.native_bf16:
        out.append(BF16)
    if backend in manifest.int8_backends():
        out.append(INT8)
    return out


def plan_rows(
    manifest, backends: list[str] | None, precisions: list[str] | None, cpu: CpuCapabilities
) -> list[tuple[str, str]]:
    """``[(backend, precision), ...]`` to measure, f32 first per backend; raises :class:`SegedgeError` for an
    explicit precision the folder or CPU cannot run."""
    installed = [b for b, v in installed_backends().items() if v]
    if backends:
        missing = [b for b in backends if b not in installed]
        if missing:
            raise SegedgeError(f"backend {', '.join(missing)} is not installed: pip install 'segedge[{missing[0]}]'")
    chosen = backends or installed
    if not chosen:
        raise SegedgeError("no inference backend installed: pip install 'segedge[openvino]' (or [onnxruntime])")
    rows = []
    for backend in chosen:
        can = available_precisions(manifest, backend, cpu)
        if precisions:
            for p in precisions:
                if p not in (F32, BF16, INT8):
                    raise SegedgeError(f"unknown precision {p!r}; choose from f32, bf16, int8")
                if p not in can and (p != BF16 or backend != "openvino"):
                    why = "no gated int8 in the folder (segedge quantize)" if p == INT8 else "ONNX Runtime has no bf16"
                    raise SegedgeError(f"--precision {p} on {backend}: {why}")
            want = [F32] + [p for p in precisions if p != F32]  # f32 is the baseline of every drop
        else:
            want = can
        rows += [(backend, p) for p in want]
    return rows


def evaluate(model, family: str, data: Dataset, on_image=None) -> tuple[dict[str, float], float]:
    """``(metrics, median ms per image)`` of one compiled ``model`` on ``data``; ``on_image()`` after each image.
    An open-vocabulary model is first given the data's class names (:func:`use_data_classes`)."""
    class_map = use_data_classes(model, family, data)
    box_acc, mask_acc = MapAccumulator(), MapAccumulator()
    ious: dict[str, list[float]] = {k: [] for k in sam_val.PROMPTS}
    times = []
    protocol = val_protocol(family)
    single_class = protocol == "yolo_map" and model.num_classes == 1
    for sample in data.samples:
        rgb = read_image(sample.path, model.max_pixels)
        instances = polygons_in_pixels(sample, rgb.shape[:2])
        if protocol == "yolo_map":
            t0 = time.perf_counter()
            tensor, geo = model.preprocess(rgb)
            detections, prototypes = model.infer(tensor)
            times.append((time.perf_counter() - t0) * 1e3)
            pred = yolo_val.val_predictions(
                detections,
                prototypes,
                model.num_classes,
                model.input_hw,
                model.output_layout,
                model.anchor_grid,
                decoding=getattr(model, "decoding", "nms"),  # a yolo folder's end-to-end head: top-k, no NMS
                class_map=class_map,
            )
            gt = yolo_val.val_targets(instances, geo)
            gt_cls = np.zeros_like(gt.classes) if single_class else gt.classes
            box_acc.add(yolo_val.box_iou(gt.boxes, pred.boxes), pred.classes, pred.scores, gt_cls)
            mask_acc.add(yolo_val.mask_iou(gt.masks, pred.masks), pred.classes, pred.scores, gt_cls)
        elif protocol == "concept_map":
            t0 = time.perf_counter()
            pred = concept_val.concept_predictions(model, rgb, concept_names(data))
            times.append((time.perf_counter() - t0) * 1e3)
            gt_boxes, gt_cls, gt_masks = concept_val.label_targets(instances, rgb.shape[:2])
            box_acc.add(yolo_val.box_iou(gt_boxes, pred.boxes), pred.classes, pred.scores, gt_cls)
            mask_acc.add(yolo_val.mask_iou(gt_masks, pred.masks), pred.classes, pred.scores, gt_cls)
        else:
            t0 = time.perf_counter()
            for k, v in sam_val.sam_image_ious(model, rgb, instances).items():
                ious[k] += v
            if instances:
                times.append((time.perf_counter() - t0) * 1e3)
        if on_image:
            on_image()
    ms = float(np.median(times)) if times else float("nan")
    if protocol in ("yolo_map", "concept_map"):
        box, mask = box_acc.result(), mask_acc.result()
        return {
            "mask_mAP50-95": mask["mAP50-95"],
            "mask_mAP50": mask["mAP50"],
            "box_mAP50-95": box["mAP50-95"],
            "box_mAP50": box["mAP50"],
        }, ms
    return {f"{k}_mIoU": float(np.mean(v)) if v else float("nan") for k, v in ious.items()}, ms


def concept_names(data: Dataset) -> list[str]:
    """The data's class names as text prompts (YOLOE's and SAM 3's): ``"person/people"`` -> ``"person"``."""
    return [n.split("/", 1)[0] for n in data.names]


def use_data_classes(model, family: str, data: Dataset) -> np.ndarray | None:
    """An open-vocabulary (YOLOE) model measured on ``data``'s classes, as ultralytics' YOLOE val does: a prompted
    folder detects the data's names from now on (its text prompts; class i is the data's class i); a prompt-free
    folder keeps its vocabulary and gets ``(V,)`` its classes' data class ids (-1: not labelled, left out).
    None for other models. :class:`SegedgeError` for names the model cannot take."""
    if not family_spec(family).vocabulary:
        return None
    names = concept_names(data)
    if getattr(model, "prompt_free", False):
        try:
            return yolo_val.vocabulary_classes(model.names, names, "this prompt-free folder")
        except ValueError as e:
            raise SegedgeError(f"{data.source}: {e}") from None
    try:
        model.set_classes(names)
    except SegedgeError as e:
        raise SegedgeError(f"{data.source}: its class names as text prompts: {e}") from None
    return None


def check_classes(manifest, data: Dataset) -> None:
    """A many-class FastSAM / YOLO-seg folder needs the dataset's classes to be its own (same count); an
    open-vocabulary one takes any names (:func:`use_data_classes`)."""
    if family_spec(manifest.family).val_protocol != "yolo_map" or family_spec(manifest.family).vocabulary:
        return
    num_classes = int(manifest.params.get("num_classes", 0))
    if num_classes != 1 and len(data.names) != num_classes:
        raise SegedgeError(
            f"{data.source} has {len(data.names)} classes, the model {num_classes}: a {num_classes}-class model "
            "is measured on data labelled with its own classes (one-class FastSAM folders take any data)"
        )


def run_val(
    model_dir,
    data_path,
    *,
    backends: list[str] | None = None,
    precisions: list[str] | None = None,
    threads: int | None = None,
    max_images: int | None = None,
    progress: bool = True,
    cpu: CpuCapabilities | None = None,
) -> dict:
    """Measure the folder on the data: ``{"model", "family", "data", "cpu", "protocol", "metrics", "rows": [...]}``,
    each row ``{"backend", "precision", "metrics", "drop", "ms_per_image"}`` (drop = f32's value minus this one)."""
    from segedge.progress import Progress

    folder = load_model_folder(model_dir)
    family = folder.manifest.family
    try:
        protocol = val_protocol(family)
    except SegedgeError:
        raise SegedgeError(
            f"{folder.path} is a {family} folder; val measures {family_names('val_protocol')} folders"
        ) from None
    data = load_dataset(data_path)
    if max_images is not None:
        data.samples = data.samples[:max_images]
    cpu = cpu or cpu_capabilities()
    check_classes(folder.manifest, data)
    rows_plan = plan_rows(folder.manifest, backends, precisions, cpu)
    bar = Progress(len(rows_plan) * len(data.samples), enabled=progress)
    rows = []
    try:
        for backend, precision in rows_plan:
            model = open_model(folder, backend, precision=precision, threads=threads)
            metrics, ms = evaluate(model, family, data, on_image=lambda b=backend, p=precision: bar.step(f"{b} {p}"))
            base = next((r["metrics"] for r in rows if r["backend"] == backend and r["precision"] == F32), metrics)
            rows.append(
                {
                    "backend": backend,
                    "precision": precision,
                    "metrics": metrics,
                    "drop": {k: base[k] - v for k, v in metrics.items()},
                    "ms_per_image": ms,
                }
            )
    finally:
        bar.close()
    return {
        "model": str(folder.path),
        "family": family,
        "variant": folder.manifest.variant,
        "input": folder.manifest.preprocess.get("size"),
        "data": {
            "source": str(data.source),
            "kind": data.kind,
            "images": len(data.samples),
            "instances": data.instance_count,
        },
        "cpu": {**cpu.to_dict(), "class": cpu.precision_class},
        "protocol": PROTOCOL[protocol],
        "metrics": list(METRICS[protocol]),
        "primary": PRIMARY[protocol],
        "rows": rows,
    }


def markdown(result: dict) -> str:
    """The result as one Markdown table, with the data, protocol and CPU above it."""
    names = result["metrics"]
    primary = result["primary"]
    data = result["data"]
    lines = [
        f"{Path(result['model']).name} ({result['family']} {result['variant']}) on {data['source']}: "
        f"{data['images']} images, {data['instances']} objects",
        f"protocol: {result['protocol']}",
        f"cpu: {result['cpu']['model']}: {result['cpu']['kind']}",
        "",
        "| backend | precision | " + " | ".join(names) + f" | drop vs f32 ({primary}) | ms / image |",
        "|---|---|" + "---:|" * (len(names) + 2),
    ]
    for r in result["rows"]:
        values = " | ".join(f"{r['metrics'][k]:.4f}" for k in names)
        drop = "-" if r["precision"] == F32 else f"{r['drop'][primary]:+.4f}"
        lines.append(f"| {r['backend']} | {r['precision']} | {values} | {drop} | {r['ms_per_image']:.1f} |")
    return "\n".join(lines)


DEFAULT_MAX_DROP = 0.01  # absolute, in the primary metric (mask mAP50-95 for FastSAM, box mIoU for SAM)


def val_verdict(metric: str, value: float, f32: float, max_drop: float, data: dict, created: str | None = None) -> dict:
    """What a val gate records: ``{"metric", "value", "f32", "drop", "max_drop", "passed", "data", "created"}`` (drop =
    f32 - value, absolute; passed when it is at most ``max_drop``)."""
    import datetime as _dt

    drop = f32 - value
    return {
        "metric": metric,
        "value": round(value, 5),
        F32: round(f32, 5),
        "drop": round(drop, 5),
        "max_drop": max_drop,
        "passed": bool(drop <= max_drop + 1e-9),
        "data": data,  # 1e-9: 0.36 - 0.35 is 0.010000000000000009
        "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def check_max_drop(max_drop: float | None) -> float:
    """``max_drop`` (None = :data:`DEFAULT_MAX_DROP`), checked to be an absolute drop from 0 to 1."""
    max_drop = DEFAULT_MAX_DROP if max_drop is None else max_drop
    if not 0 <= max_drop < 1:
        raise SegedgeError(f"--max-drop must be from 0 to 1 (absolute drop of the metric), got {max_drop}")
    return max_drop


class ValGate:
    """The val metric as a gate (``segedge quantize --val``): f32's value per backend (measured once), then each
    candidate's drop, as :func:`val_verdict` records it."""

    def __init__(self, folder, data_path, max_drop: float | None, log=print):
        family = folder.manifest.family
        try:
            protocol = val_protocol(family)
        except SegedgeError:
            raise SegedgeError(f"--val measures {family_names('val_protocol')} folders, not {family}") from None
        self.family, self.metric, self.max_drop, self.log = family, PRIMARY[protocol], check_max_drop(max_drop), log
        self.data = load_dataset(data_path)
        check_classes(folder.manifest, self.data)
        self._f32: dict[str, float] = {}

    def verdict(self, reference, candidate, backend: str, precision: str) -> dict:
        """:func:`val_verdict` of ``candidate`` against ``reference`` (the same folder at f32) on the gate's data."""
        if backend not in self._f32:
            self._f32[backend] = evaluate(reference, self.family, self.data)[0][self.metric]
        value = evaluate(candidate, self.family, self.data)[0][self.metric]
        self.log(
            f"{backend} {precision}: {self.metric} {value:.4f} vs f32 {self._f32[backend]:.4f} on {self.data.source} "
            f"({len(self.data.samples)} images): drop {self._f32[backend] - value:+.4f}, max {self.max_drop}"
        )
        data = {
            "source": str(self.data.source),
            "images": len(self.data.samples),
            "instances": self.data.instance_count,
        }
        return val_verdict(self.metric, value, self._f32[backend], self.max_drop, data)


def record_val(model_dir, result: dict, max_drop: float | None = None) -> dict[str, dict]:
    """Gate the reduced precisions of ``result`` (from :func:`run_val` on this folder) on the primary metric's drop
    against f32 and write the verdicts into the manifest; returns ``{"<backend> <precision>": verdict}``.

    - bf16 rows: ``quantized.bf16.records[<cpu class>]["val"]``; the record's ``passed`` becomes
      (agreement gate passed, when it was measured) and (drop <= ``max_drop``);
    - int8 rows: ``quantized.int8.val[<backend>]``; ``--precision auto`` skips an int8 whose val failed.
    """
    import datetime as _dt

    from segedge.evaluation.bf16_gate import record_bf16
    from segedge.manifest import write_manifest_files

    max_drop = check_max_drop(max_drop)
    folder = load_model_folder(model_dir, verify=False)
    cpu = result["cpu"]
    cpu_class = cpu["class"]
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    verdicts = {}
    for row in result["rows"]:
        if row["precision"] == F32:
            continue
        drop = row["drop"][result["primary"]]
        value = row["metrics"][result["primary"]]
        verdict = val_verdict(result["primary"], value, value + drop, max_drop, result["data"], created)
        verdicts[f"{row['backend']} {row['precision']}"] = verdict
        if row["precision"] == BF16:
            from segedge.runtime.precision import bf16_record

            previous = bf16_record(folder.manifest, cpu_class) or {}
            record = {"cpu": cpu["model"], "cpu_class": cpu_class, "created": created, **previous, "val": verdict}
            agreement_ok = "gate" not in previous or previous["gate"] >= previous.get("min", 0)  # measured by quantize
            record["passed"] = bool(agreement_ok and verdict["passed"])
            record_bf16(folder, record)
        elif row["precision"] == INT8:
            int8 = folder.manifest.quantized[INT8]
            int8["val"] = {**int8.get("val", {}), row["backend"]: verdict}
            write_manifest_files(folder.path, folder.manifest, dict(folder.manifest.files))
    return verdicts
