"""``segedge info``: versions, backends, the CPU's kind, and a model folder's manifest and precisions."""

from __future__ import annotations

import json
import sys

from segedge._version import __version__
from segedge.cli.common import agreement_scores, measured_on
from segedge.export_options import DEFAULTS_SOURCES
from segedge.families import family as family_spec
from segedge.precisions import BF16, INT8
from segedge.stdout import print_line


def _info(args) -> int:
    from segedge.manifest import load_model_folder
    from segedge.runtime.backends import installed_backends
    from segedge.runtime.cpu import cpu_capabilities
    from segedge.runtime.precision import explain_auto

    backends = installed_backends()
    cpu = cpu_capabilities()
    folder = load_model_folder(args.model, verify=not args.no_verify) if args.model else None
    auto = {b: explain_auto(folder.manifest, b, cpu) for b, v in backends.items() if v} if folder is not None else {}
    if args.json:
        data = {"segedge": __version__, "python": sys.version.split()[0], "backends": backends, "cpu": cpu.to_dict()}
        if folder is not None:
            data["model_folder"] = str(folder.path)
            data["auto_precision"] = {b: p for b, (p, _) in auto.items()}
            data["auto_precision_why"] = {b: why for b, (_, why) in auto.items()}
            from segedge.runtime.precision import precision_table

            data["precisions"] = precision_table(folder.manifest, list(auto), cpu)
            data["manifest"] = folder.manifest.to_dict()
        print_line(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"segedge {__version__} (python {sys.version.split()[0]})")
    for name, version in backends.items():
        print(f"  backend {name}: {version or 'not installed'}")
    print(f"  cpu: {cpu.model}: {cpu.kind()}")
    print(f"  cpu flags ({cpu.source}): {cpu.flag_summary()}")
    if folder is None:
        return 0
    _print_folder(folder, args.no_verify, cpu, auto)
    return 0


def _print_folder(folder, no_verify: bool, cpu, auto: dict) -> None:
    """What ``info MODEL_DIR`` prints of a folder: its manifest, graphs, precisions and what auto runs."""
    from segedge.manifest import MANIFEST_NAME

    m = folder.manifest
    print(f"model folder {folder.path} ({'verified' if not no_verify else 'sizes checked'})")
    print(f"  family {m.family}, variant {m.variant}, format v{m.format_version}, created {m.created}")
    print(f"  source {m.source.get('checkpoint')} sha256 {m.source.get('sha256', '?')}")
    print("  exported with " + ", ".join(f"{k} {v}" for k, v in m.exporter.items()))
    pre = m.preprocess
    tensor = " (the graph takes the uint8 image and normalises it itself)" if pre.get("tensor") == "uint8_nhwc" else ""
    print(
        f"  preprocess {pre.get('kind')} {pre.get('size')} mean {pre.get('mean')} std {pre.get('std')} pad {pre.get('pad_value')}{tensor}"
    )
    for name, graph in m.graphs.items():
        ins = ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in graph.inputs)
        outs = ", ".join(f"{t.name} {list(t.shape)} {t.dtype}" for t in graph.outputs)
        print(f"  graph {name}: {graph.onnx} / {graph.openvino}\n    in:  {ins}\n    out: {outs}")
        print(f"    onnxruntime memory arena: {_arena_phrase(graph.onnxruntime)}")
    if m.classes:
        shown = ", ".join(m.classes[:10]) + (f", ... ({len(m.classes)} classes)" if len(m.classes) > 10 else "")
        print(f"  classes: {shown}")
    if m.params:
        print("  params: " + ", ".join(f"{k}={v}" for k, v in m.params.items() if k != "video"))
    video = m.params.get("video")
    if video:
        banks = ", ".join(
            f"{g['graph']} ({g['frames']} frames, {g['pointers']} pointers)" for g in video["memory_graphs"]
        )
        print(f"  video tracking (segedge track, Sam2Video): memory attention {banks}")
    _print_int8(m)
    _print_bf16(m)
    from segedge.runtime.precision import precision_table

    print(f"  precisions on this CPU ({cpu.precision_class}):")
    for row in precision_table(m, list(auto), cpu):
        state = (
            {None: "-", True: "passed", False: "FAILED"}[row["passed"]]
            if row["measured"] is not False
            else "not measured"
        )
        print(
            f"    {row['backend']:<11} {row['precision']:<4} {state:<12} {row['numbers']}{'   <- auto' if row['auto'] else ''}"
        )
    for backend, (precision, why) in auto.items():
        print(f"  --precision auto on {backend}: {precision} ({why})")
    if video:
        from segedge.runtime.precision import tracking_precision

        for backend in auto:
            precision, why = tracking_precision(m, backend, cpu)
            print(f"  --precision auto for tracking on {backend}: {precision} ({why})")
    print(f"  files (listed in {MANIFEST_NAME}):")
    for name, meta in m.files.items():
        print(f"    {name:<24} {meta['bytes']:>12,d} bytes  sha256 {meta['sha256'][:16]}...")


def _print_int8(m) -> None:
    """The int8 section: calibration, each backend's gate (and speed), what was rejected."""
    from segedge.runtime.precision import gated_on_too_few, val_phrase

    int8 = m.quantized.get(INT8)
    if int8:
        calib = int8["calibration"]
        print(
            f"  int8 ({int8['created']}): calibrated on {calib['count']} image(s), gated on {len(calib['held_out'])} held out; "
            f"gate {int8['gate']['metric']} >= {int8['gate']['min']} (worst prompt type"
            f"{'' if 'held_out_images' not in int8['gate'] else ', its lower 95% bound over the held-out images'})"
        )
        for backend, measured in int8["agreement"].items():
            files = ", ".join(f"{g}: {f[backend]}" for g, f in int8["graphs"].items() if backend in f)
            few = gated_on_too_few(measured, int8.get("val", {}).get(backend))
            counted = measured_on(measured)
            enough = f" (too few for --precision auto: {few})" if few else ""
            print(f"    {backend}: agreement with f32 {agreement_scores(measured)}{counted}{enough}; {files}")
            speed = int8.get("speed", {}).get(backend)
            if speed:
                alt = speed["compared_with"]
                print(
                    f"    {backend}: speed when quantized on {speed['cpu']} ({speed['cpu_class']}): int8 {speed['int8_ms']:.1f} ms, "
                    f"{alt} {speed[f'{alt}_ms']:.1f} ms per image"
                    + (f", noise ±{100 * speed['noise']:.0f}%" if "noise" in speed else "")
                )
        for backend, v in int8.get("val", {}).items():
            print(f"    {backend}: {val_phrase(v)}: {'passed' if v['passed'] else 'failed'}")
        for backend, measured in int8.get("rejected", {}).items():
            missed = (
                f"{measured['val']['metric']} dropped {measured['val']['drop']:.4f} > {measured['val']['max_drop']}"
                if "val" in measured
                else f"{measured['gate']:.4f}"
            )
            print(f"    {backend}: no int8 (missed the gate: {missed})")
        print("    tools: " + ", ".join(f"{k} {v}" for k, v in int8["tools"].items()))
    else:
        print("  int8: none (add one with `segedge quantize MODEL_DIR --calibration IMAGES...`)")


def _print_bf16(m) -> None:
    """The bf16 gates measured per CPU class, and the folder's YOLO defaults."""
    from segedge.runtime.precision import val_phrase

    bf16_records = (m.quantized.get(BF16) or {}).get("records", {})
    for cls, rec in bf16_records.items():
        parts = []
        if rec.get("agreement"):
            scores = ", ".join(f"{k} {v:.4f}" for k, v in rec["agreement"].items())
            counted = measured_on(rec)
            parts.append(f"agreement with f32 {scores}{counted} (worst {rec.get('gate')} vs gate {rec.get('min')})")
        if "val" in rec:
            parts.append(val_phrase(rec["val"]))
        print(
            f"  bf16 measured on {rec.get('cpu')} ({cls}): {'; '.join(parts)}: {'passed' if rec.get('passed') else 'failed'}"
        )
    if not bf16_records and family_spec(m.family).segments_images:
        print("  bf16: never measured (auto runs bf16 only where it passed a gate: `segedge quantize` measures it)")
    if "agnostic" in m.params:
        who = DEFAULTS_SOURCES.get(m.params.get("defaults"), "ultralytics' predict")
        nms = "class-agnostic" if m.params["agnostic"] else "per class"
        print(
            f"  defaults ({who}): conf {m.params.get('conf')}, iou {m.params.get('iou')}, NMS {nms}, max_det {m.params.get('max_det')}"
        )


def _arena_phrase(record: dict) -> str:
    """How export decided ONNX Runtime's memory arena for a graph (segedge.runtime.ort_memory)."""
    if not record:
        return "off (not measured: exported before segedge measured it; re-export to measure)"
    state = "on" if record["memory_arena"] else "off"
    peak, ms = record.get("peak_mib"), record.get("ms")
    if not peak:
        return state
    phrase = f"{state} (measured at export: peak {peak['arena']:.0f} MiB with it, {peak['no_arena']:.0f} MiB without"
    if ms:
        phrase += f"; {ms['arena']:.1f} vs {ms['no_arena']:.1f} ms per run"
    return phrase + ")"


def register(sub) -> None:
    """Add this command to the ``segedge`` subcommands ``sub``."""
    info = sub.add_parser("info", help="show versions, installed backends, and a model folder's manifest")
    info.add_argument("model", nargs="?", help="model folder")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.add_argument("--no-verify", action="store_true", help="do not re-hash the files")
    info.set_defaults(run=_info)
