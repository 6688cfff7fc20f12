"""Ray Data (`segedge segment-dataset`) vs the pipelined local loop on one machine, same images, same run.

    python benchmarks/dataset_ray.py --model models/fastsam --images FOLDER [--copies 10] [--precision f32]

Both write one JSON record per image (segment's schema with RLE masks). The local side is
``segment_stream`` (pipelined, one model, all cores); the Ray side is ``segment_dataset`` on a local Ray
with one actor per core (one inference thread each). Ray's time is given with and without starting Ray
(``ray.init``) and without the actors' model compile (the first batch). Record the CPU flags (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from segedge.runtime.cpu import cpu_capabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[2] / "shared/images"))
    parser.add_argument("--copies", type=int, default=10, help="copies of each image (default 10)")
    parser.add_argument("--precision", default="f32")
    parser.add_argument(
        "--threads", type=int, default=None, help="inference threads per Ray actor (default 1: one actor per core)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    cpu = cpu_capabilities()
    print(f"cpu: {cpu.model}: {cpu.kind()} ({cpu.flag_summary()}), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        for i in range(args.copies):
            for src in sorted(Path(args.images).glob("*.jpg")):
                shutil.copy(src, corpus / f"{i:03d}_{src.name}")
        paths = sorted(str(p) for p in corpus.iterdir())
        local = _local(args, paths, Path(tmp) / "local.jsonl")
        ray_row = _ray(args, paths, Path(tmp) / "ray")
    n = len(paths)
    print(f"{n} images ({args.copies} copies of each photo in {args.images}), {args.precision}")
    print("| runner | seconds | images/s | vs local pipelined |\n|---|---:|---:|---:|")
    print(f"| local, pipelined (segment_stream) | {local:.2f} | {n / local:.2f} | 1.00x |")
    warm = ray_row.pop("warm-up")
    for name, seconds in ray_row.items():
        print(f"| Ray Data, {name} | {seconds:.2f} | {n / seconds:.2f} | {local / seconds:.2f}x |")
    print(
        f"\nA separate Ray run on 4 images took {warm:.2f} s: starting the actors (a Python process each, importing "
        "segedge and the backend) and compiling the model in each; every run pays it once."
    )


def _local(args, paths, out: Path) -> float:
    from segedge import FastSam
    from segedge.runtime.stream import segment_stream

    model = FastSam(args.model, "openvino", precision=args.precision)
    model.everything(paths[0])  # warm-up
    t0 = time.perf_counter()
    with open(out, "w") as handle:
        for path, result in zip(paths, segment_stream(model, paths)):
            handle.write(json.dumps({"path": path, "ok": True, **result.to_dict()}) + "\n")
    return time.perf_counter() - t0


def _ray(args, paths, out: Path) -> dict:
    import ray

    from segedge.data import segment_dataset

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    t1 = time.perf_counter()
    warm = segment_dataset(
        paths[:4],
        args.model,
        str(out / "warm"),
        precision=args.precision,
        threads=args.threads,
        batch_size=2,
        log=lambda *_: None,
    )
    t2 = time.perf_counter()
    summary = segment_dataset(
        paths,
        args.model,
        str(out / "run"),
        precision=args.precision,
        threads=args.threads,
        batch_size=args.batch_size,
        log=lambda *_: None,
    )
    t3 = time.perf_counter()
    ray.shutdown()
    assert summary["done"] == len(paths), summary
    return {
        "run (actors start, compile, segment)": t3 - t2,
        "run + ray.init": (t3 - t2) + (t1 - t0),
        "warm-up": t2 - t1 if warm["done"] == 4 else float("nan"),
    }


if __name__ == "__main__":
    main()
