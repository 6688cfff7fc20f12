"""Throughput of ONE shared model object called from 1, 2, ... threads, per backend.

    python benchmarks/concurrency.py --model models/fastsam [--images IMG...] [--calls 24] [--threads 1 2]

Prints images/s per backend and thread count, and checks every threaded result against the serial
one (boxes, scores and masks bit-identical). FastSAM folders run ``everything``; SAM folders run
``set_image`` + one click per call. Record the CPU flags (printed) with the numbers.
"""

from __future__ import annotations

import argparse
import glob
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.runtime.cpu import cpu_capabilities
from segedge.runtime.model_base import model_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--images",
        nargs="+",
        default=sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "shared/images/*.jpg")))[:4],
    )
    parser.add_argument("--calls", type=int, default=24)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precision", default="f32")
    args = parser.parse_args()
    cpu = cpu_capabilities()
    print(f"cpu: {cpu.model}: {cpu.kind()} ({cpu.flag_summary()})")
    family = load_model_folder(args.model).manifest.family
    images = [read_image(p) for p in args.images]
    print("| backend | threads | images/s | vs 1 thread | identical to serial |\n|---|---|---|---|---|")
    for backend in ("openvino", "onnxruntime"):
        model = model_class(family)(args.model, backend=backend, precision=args.precision)
        call = _call(model, family)
        serial = [call(im) for im in images]
        base = None
        for n in args.threads:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                outs = list(pool.map(lambda i, call=call: call(images[i % len(images)]), range(args.calls)))
            rate = args.calls / (time.perf_counter() - t0)
            base = base or rate
            same = all(_same(o, serial[i % len(images)]) for i, o in enumerate(outs))
            print(f"| {backend} | {n} | {rate:.2f} | {rate / base:.2f}x | {'yes' if same else 'NO'} |")


def _call(model, family):
    if family == "fastsam":
        return lambda im: model.everything(im)

    def sam(im):
        model.set_image(im)
        h, w = im.shape[:2]
        return model.predict([[w / 2, h / 2]], [1], multimask_output=False)

    return sam


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b))
    return np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores) and np.array_equal(a.masks, b.masks)


if __name__ == "__main__":
    main()
