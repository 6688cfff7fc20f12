"""Does keeping chosen layers in f32 inside OpenVINO's bf16 run make a FastSAM-arch folder pass the bf16 gate?

    python benchmarks/bf16_recipe.py MODEL_DIR NAME=REGEX [NAME=REGEX ...]

For each NAME, a copy of the folder whose IR marks the layers whose line matches REGEX with OpenVINO's
``precise`` runtime attribute (kept in f32 when the inference precision is bf16; an empty REGEX marks
nothing, plain bf16), then the bf16 gate's agreement with the folder's f32 (everything / points /
boxes mask IoU) on the shared photos and COCO-mini images, and the median everything time. Example:

    python benchmarks/bf16_recipe.py models/fastsam plain= head='name="/inner/model.22/' all='name="/inner/'
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segedge.evaluation.agreement import agreement
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.runtime.fastsam import FastSam

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PRECISE = '\t\t\t\t<attribute name="precise" version="0" />'


def mark_layers(xml: str, pattern: str) -> tuple[str, int]:
    """The IR text with every non-constant layer whose opening line matches ``pattern`` marked precise."""
    lines, out, count, i = xml.split("\n"), [], 0, 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        if (
            pattern
            and line.strip().startswith("<layer ")
            and re.search(pattern, line)
            and 'type="Const"' not in line
            and 'type="Parameter"' not in line
        ):
            count += 1
            if lines[i + 1].strip() == "<rt_info>":
                out += [lines[i + 1], PRECISE]
                i += 2
                continue
            out += ["\t\t\t<rt_info>", PRECISE, "\t\t\t</rt_info>"]
        i += 1
    return "\n".join(out), count


def main(folder: Path, variants: dict[str, str]) -> None:
    images = [
        read_image(p)
        for p in sorted((SHARED / "images").glob("*.jpg")) + sorted((SHARED / "coco-mini" / "images").glob("*.jpg"))
    ]
    reference = FastSam(load_model_folder(folder), "openvino", precision="f32", cache_dir=False)
    with tempfile.TemporaryDirectory() as tmp:
        for name, pattern in variants.items():
            copy = Path(tmp) / name
            shutil.copytree(folder, copy)
            text, count = mark_layers((folder / "model.xml").read_text(), pattern)
            (copy / "model.xml").write_text(text)
            manifest = json.loads((copy / "segedge.json").read_text())
            data = text.encode()
            manifest["files"]["model.xml"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            (copy / "segedge.json").write_text(json.dumps(manifest))
            candidate = FastSam(load_model_folder(copy, verify=False), "openvino", precision="bf16", cache_dir=False)
            scores = agreement("fastsam", reference, candidate, images)
            times = []
            for _ in range(3):
                for image in images[:3]:
                    start = time.perf_counter()
                    candidate.everything(image)
                    times.append(time.perf_counter() - start)
            print(
                f"{name}: {count} layers f32; agreement "
                + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                + f"; everything {np.median(times) * 1000:.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:]))
