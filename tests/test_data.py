"""segedge.data: Ray Data over a local Ray (no external cluster): results equal `segedge segment`,
a second run does nothing twice, a worker killed mid-run loses nothing, Parquet and JSON Lines."""

from __future__ import annotations

import json
import shutil

import pytest

ray = pytest.importorskip("ray", reason="segment-dataset needs the ray extra")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_images):
    folder = tmp_path_factory.mktemp("corpus")
    for i, src in enumerate(shared_images * 2):
        shutil.copy(src, folder / f"{i:02d}_{src.name}")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(autouse=True, scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _expected(folder, images):
    from segedge import FastSam

    model = FastSam(folder, "openvino", precision="f32")
    return {str(p.resolve()): model.everything(str(p)).to_dict()["instances"] for p in images}


def test_dataset_equals_segment_and_resumes(real_folder_640, corpus, tmp_path):
    from segedge.data import read_results, segment_dataset

    out = tmp_path / "out"
    first = segment_dataset(
        [str(corpus)], str(real_folder_640), str(out), precision="f32", batch_size=3, log=lambda *_: None
    )
    images = sorted(p for p in corpus.iterdir() if p.name != "broken.jpg")
    assert first["total"] == len(images) + 1 and first["done"] == len(images) and first["failed"] == 1
    records = read_results(str(out))
    want = _expected(real_folder_640, images)
    for path, instances in want.items():
        assert records[path]["ok"] and records[path]["instances"] == instances
    broken = records[str((corpus / "broken.jpg").resolve())]
    assert broken["ok"] is False and "could not be decoded" in broken["error"]
    parts = sorted(out.glob("part-*.jsonl"))
    second = segment_dataset(
        [str(corpus)], str(real_folder_640), str(out), precision="f32", batch_size=3, log=lambda *_: None
    )
    assert second["skipped"] == len(images) and second["done"] == 0  # only the broken image was tried again
    after = sorted(out.glob("part-*.jsonl"))
    assert set(parts) <= set(after) and len(after) == len(parts) + 1  # one new part: the broken image's retry


def test_a_killed_worker_loses_nothing(real_folder_640, corpus, tmp_path):
    """The first actor to meet one image dies (os._exit); Ray restarts it and redoes the batch."""
    from segedge import data

    marker = tmp_path / "died-once"
    victim = sorted(p for p in corpus.iterdir() if p.name != "broken.jpg")[4].name

    class Dying(data.Segmenter):  # defined here: Ray ships it to the workers by value
        def __call__(self, batch):
            import os

            if any(str(p).endswith(victim) for p in batch["path"]) and not marker.exists():
                marker.write_text("x")
                os._exit(1)
            return super().__call__(batch)

    out = tmp_path / "out"
    summary = data.segment_dataset(
        [str(corpus)],
        str(real_folder_640),
        str(out),
        precision="f32",
        batch_size=2,
        log=lambda *_: None,
        actor_class=Dying,
    )
    assert marker.exists()  # a worker really died
    images = [p for p in corpus.iterdir() if p.name != "broken.jpg"]
    assert summary["done"] == len(images)
    lines = [json.loads(line) for part in out.glob("part-*.jsonl") for line in part.read_text().splitlines()]
    assert sorted(r["path"] for r in lines if r["ok"]) == sorted(str(p.resolve()) for p in images)  # each once
    assert not list(out.glob(".part-*"))


def test_parquet_output_and_cli(real_folder_640, corpus, tmp_path, capsys):
    from segedge.cli import main
    from segedge.data import read_results

    out = tmp_path / "pq"
    assert (
        main(
            [
                "segment-dataset",
                str(corpus / "02_*.jpg"),
                "--model",
                str(real_folder_640),
                "--out",
                str(out),
                "--format",
                "parquet",
                "--precision",
                "f32",
            ]
        )
        == 0
    )
    assert "1 images segmented" in capsys.readouterr().out
    records = read_results(str(out), "parquet")
    (record,) = records.values()
    assert record["ok"] and record["count"] == len(record["instances"]) >= 1
    assert (
        main(["segment-dataset", str(tmp_path / "nothing-*.jpg"), "--model", str(real_folder_640), "--out", str(out)])
        == 2
    )
    assert "no images" in capsys.readouterr().err


def test_cli_everything_on_a_sam_folder(capsys, monkeypatch, sam_tiny_folder, bus, tmp_path):
    """`segedge segment-dataset --everything` on a SAM folder: the command asks for "everything" (and refuses it with
    --point), and the actor given that request writes the automatic mask generator's masks for each image, exactly as
    the generator run here gives them. The actor runs in this process: the seeded SAM's masks are noise that the
    generator's default filters drop (0 masks from its 32 x 32 points, 127 s through Ray here), so the generator's
    options are opened here, which only a monkeypatch in this process can do."""
    from functools import partial

    import segedge.data as data
    import segedge.runtime.sam_generator as sam_generator
    from segedge import Sam
    from segedge.cli import main

    asked = {}

    def segment_dataset(inputs, model, out, **kwargs):  # what the command asks of the Ray run
        asked.update(kwargs)
        return dict.fromkeys(("done", "failed", "skipped", "seconds", "images_per_s"), 0)

    monkeypatch.setattr(data, "segment_dataset", segment_dataset)
    argv = ["segment-dataset", str(bus), "--model", str(sam_tiny_folder), "--out", str(tmp_path / "o"), "--everything"]
    assert main(argv) == 0 and asked["prompts"] == {"everything": True}
    assert main([*argv, "--point", "10,10"]) == 2
    assert "--everything keeps all masks; do not combine it with --point or --box" in capsys.readouterr().err
    # the seeded SAM's masks are noise: open segment-anything's filters so that many masks are compared
    options = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    monkeypatch.setattr(
        sam_generator, "SamAutomaticMaskGenerator", partial(sam_generator.SamAutomaticMaskGenerator, **options)
    )
    out = tmp_path / "everything"
    out.mkdir()
    actor = data.Segmenter(str(sam_tiny_folder), str(out), "jsonl", "openvino", "f32", None, dict(asked["prompts"]))
    assert actor({"path": [str(bus)], "bytes": [bus.read_bytes()]})["ok"] == [True]
    (record,) = data.read_results(str(out)).values()
    model = Sam(sam_tiny_folder, "openvino", precision="f32")
    want = sam_generator.SamAutomaticMaskGenerator(model).segment(str(bus)).to_dict()
    assert record["ok"] and record["precision"] == "f32" and record["count"] == want["count"] >= 10
    assert [i["rle"] for i in record["instances"]] == [i["rle"] for i in want["instances"]]
    assert [i["score"] for i in record["instances"]] == [i["score"] for i in want["instances"]]
