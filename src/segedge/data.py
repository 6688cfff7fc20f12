"""Corpora on a cluster: segment many images with Ray Data (the ``ray`` extra).

:func:`segment_dataset` lists the input images (local paths, folders, globs, or any URI pyarrow reads:
``s3://``, ``gs://``, ``hdfs://``, ...), leaves out those an earlier run already finished, reads the
rest with ``ray.data.read_binary_files``, and runs one segedge model per actor in an actor pool
(one compiled model per actor, by default one actor per node using all of its cores). Each batch of results is written
by the actor that made it as one file in ``out`` (JSON Lines, or Parquet), under a temporary name
renamed when complete, named after the batch's inputs: a batch retried after a worker died
rewrites the same file, so nothing is lost and nothing is counted twice. A record is ``segedge
segment``'s JSON (COCO RLE masks) plus ``path`` and ``ok`` (``error`` when it failed; failed images are
tried again by the next run).

``segedge segment-dataset INPUT... --model DIR --out OUT [--address ray://head:10001]`` runs it; with no
address it starts (and stops) a local Ray.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from pathlib import Path

from segedge.families import family as family_spec
from segedge.errors import SegedgeError

#: File name suffixes taken from folders and globs.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
FORMATS = ("jsonl", "parquet")


def _is_uri(text: str) -> bool:
    return "://" in text


def list_inputs(inputs: list[str]) -> list[str]:
    """Image paths/URIs from files, folders (recursive) and globs, sorted, each once."""
    found: list[str] = []
    for item in inputs:
        if _is_uri(item):
            import pyarrow.fs as pafs

            fs, root = pafs.FileSystem.from_uri(item)
            info = fs.get_file_info(root)
            if info.type == pafs.FileType.Directory:
                scheme = item.split("://", 1)[0]
                entries = fs.get_file_info(pafs.FileSelector(root, recursive=True))
                found += [
                    f"{scheme}://{e.path}"
                    for e in entries
                    if e.type == pafs.FileType.File and e.path.lower().endswith(IMAGE_EXTENSIONS)
                ]
            elif info.type == pafs.FileType.File:
                found.append(item)
            else:
                raise SegedgeError(f"input not found: {item}")
            continue
        path = Path(item)
        if path.is_dir():
            found += [
                str(p.resolve())
                for p in sorted(path.rglob("*"))
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
            ]
        elif path.is_file():
            found.append(str(path.resolve()))
        elif any(c in item for c in "*?["):
            found += [
                str(Path(p).resolve())
                for p in sorted(glob.glob(item, recursive=True))
                if Path(p).suffix.lower() in IMAGE_EXTENSIONS
            ]
        else:
            raise SegedgeError(f"input not found: {item} (not a file, folder, glob or URI)")
    return sorted(dict.fromkeys(found))


def _rows(part: Path, fmt: str, columns: list[str] | None = None) -> list[dict]:
    """The records of one part file (Parquet: only ``columns`` when given, instances parsed back from JSON)."""
    if fmt == "jsonl":
        return [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines()]
    import pyarrow.parquet as pq

    rows = pq.read_table(part, columns=columns).to_pylist()
    return [
        dict(r, instances=json.loads(r["instances"]) if r.get("instances") else []) if "instances" in r else r
        for r in rows
    ]


def finished(out: str, fmt: str) -> set[str]:
    """Paths that earlier runs wrote an ``ok`` record for in ``out`` (unreadable files are skipped)."""
    done: set[str] = set()
    folder = Path(out)
    if not folder.is_dir():
        return done
    for part in folder.glob(f"part-*.{fmt}"):
        try:
            done.update(r["path"] for r in _rows(part, fmt, ["path", "ok"]) if r.get("ok"))
        except (OSError, ValueError, KeyError) as exc:
            print(f"warning: skipping unreadable {part}: {exc}")
    return done


def read_results(out: str, fmt: str = "jsonl") -> dict[str, dict]:
    """Every record in ``out`` by path (a later ok record wins over an error)."""
    records: dict[str, dict] = {}
    for part in sorted(Path(out).glob(f"part-*.{fmt}")):
        for row in _rows(part, fmt):
            if row.get("ok") or row["path"] not in records:
                records[row["path"]] = row
    return records


class Segmenter:
    """The Ray actor: one compiled model; ``__call__`` segments a batch and writes its part file."""

    def __init__(
        self, model_dir: str, out: str, fmt: str, backend: str, precision: str, threads: int | None, prompts: dict
    ):
        from segedge.manifest import load_model_folder
        from segedge.runtime.model_base import open_model
        from segedge.runtime.stream import segment_stages

        folder = load_model_folder(model_dir)
        self.model = open_model(folder, backend, precision=precision, threads=threads)
        generator = None
        if prompts.pop("everything", False) and family_spec(folder.manifest.family).promptable:
            from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

            generator = SamAutomaticMaskGenerator(self.model)
        self.stages = segment_stages(self.model, generator=generator, **prompts)
        self.out, self.fmt = out, fmt

    def __call__(self, batch: dict) -> dict:
        from segedge.runtime.pipeline import Failed, pipelined

        paths = [str(p) for p in batch["path"]]
        rows = []
        for path, result in zip(paths, pipelined([bytes(b) for b in batch["bytes"]], *self.stages)):
            if isinstance(result, Failed):
                rows.append({"path": path, "ok": False, "error": result.message})
            else:
                record = result.to_dict()
                record.pop("image", None)
                rows.append(
                    {
                        "path": path,
                        "ok": True,
                        "backend": self.model.backend_name,
                        "precision": self.model.precision,
                        **record,
                    }
                )
        name = "part-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:20] + f".{self.fmt}"
        _write_atomically(Path(self.out) / name, rows, self.fmt)
        return {"path": paths, "ok": [r["ok"] for r in rows], "count": [r.get("count", 0) for r in rows]}


def _write_atomically(path: Path, rows: list[dict], fmt: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if fmt == "jsonl":
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "path": [r["path"] for r in rows],
                "ok": [r["ok"] for r in rows],
                "error": [r.get("error") for r in rows],
                "width": [r.get("width") for r in rows],
                "height": [r.get("height") for r in rows],
                "count": [r.get("count") for r in rows],
                "instances": [json.dumps(r.get("instances")) if r["ok"] else None for r in rows],
                "timings_ms": [json.dumps(r.get("timings_ms")) if r["ok"] else None for r in rows],
            }
        )
        pq.write_table(table, tmp)
    os.replace(tmp, path)


def segment_dataset(
    inputs: list[str],
    model_dir: str,
    out: str,
    *,
    address: str | None = None,
    backend: str = "openvino",
    precision: str = "auto",
    actors: int | None = None,
    threads: int | None = None,
    batch_size: int = 8,
    fmt: str = "jsonl",
    prompts: dict | None = None,
    log=print,
    actor_class: type | None = None,
) -> dict:
    """Segment every input image not already done in ``out``; returns ``{total, skipped, done, failed,
    seconds, images_per_s}`` for this run. ``threads``: inference threads per actor (default: the CPUs
    of the smallest node); ``actors``: model copies (default: as many as fit, i.e. one per node of
    that size); each actor pipelines its batch (read | network | post-process); ``actor_class``: a
    :class:`Segmenter` subclass to run instead (the tests use one that kills its worker)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SegedgeError("segment-dataset needs Ray: pip install 'segedge[ray]'") from None
    if fmt not in FORMATS:
        raise SegedgeError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from segedge.manifest import load_model_folder

    load_model_folder(model_dir)  # a bad folder fails here, not in every actor
    model_dir = str(Path(model_dir).resolve())
    out_path = Path(out).resolve()
    out_path.mkdir(parents=True, exist_ok=True)
    for stale in out_path.glob(".part-*.tmp-*"):
        stale.unlink(missing_ok=True)  # a batch a killed worker did not finish
    paths = list_inputs(inputs)
    done_before = finished(str(out_path), fmt)
    todo = [p for p in paths if p not in done_before]
    log(f"{len(paths)} images, {len(paths) - len(todo)} already done in {out_path}, {len(todo)} to segment")
    summary = {
        "total": len(paths),
        "skipped": len(paths) - len(todo),
        "done": 0,
        "failed": 0,
        "seconds": 0.0,
        "images_per_s": 0.0,
    }
    if not todo:
        return summary
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"CI": os.environ.get("CI", ""), "YOLO_OFFLINE": "1"}},
        )
    try:
        node_cpus = [
            int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")
        ]
        # one actor per node using all its cores (inference threads + the actor's own pipeline) measured fastest on
        # 2-core nodes: 0.90x the local loop, vs 0.63x with one single-threaded actor per core (benchmarks/dataset_ray.py)
        threads = threads or max(1, min(node_cpus or [1]))
        actors = actors or max(1, sum(c // threads for c in node_cpus) or 1)
        t0 = time.perf_counter()
        # reading is light: it must not wait for CPUs that the model actors hold
        ds = ray.data.read_binary_files(todo, include_paths=True, num_cpus=0)
        results = ds.map_batches(
            actor_class or Segmenter,
            fn_constructor_args=(model_dir, str(out_path), fmt, backend, precision, threads, dict(prompts or {})),
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=threads,
        ).take_all()  # Ray Data restarts a dead actor and retries its batch (max_restarts / max_task_retries -1)
        seconds = time.perf_counter() - t0
    finally:
        if started_here:
            ray.shutdown()
    ok = sum(1 for r in results if r["ok"])
    summary.update(
        done=ok, failed=len(results) - ok, seconds=round(seconds, 2), images_per_s=round(len(results) / seconds, 3)
    )
    return summary
