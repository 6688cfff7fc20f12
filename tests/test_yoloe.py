"""YOLOE-11-seg and YOLOE-26-seg through `segedge export yoloe`, the vocabulary open at run time: seeded checkpoints
built from ultralytics' own yaml files and a seeded MobileCLIP-B TorchScript text encoder (what ultralytics loads),
compared with ultralytics' own YOLOE predictor given the same class embeddings or the same visual prompts, on both
backends; the text encoder and tokens against the TorchScript one and open_clip's tokenizer; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from helpers import reference_masks, run_cli
from yoloe_helpers import CLASSES, make_text_encoder, make_yoloe_checkpoint, text_embeddings, ultralytics_yoloe_predict

from segedge.errors import CheckpointError, PromptError
from segedge.imageio import read_image
from segedge.manifest import load_model_folder
from segedge.postprocess.boxes import box_iou
from segedge.runtime.yoloe import Yoloe

PHOTOS = ("sam_groceries.jpg", "sam_truck.jpg")
NAMES = ["person", "bus", "bag of groceries", "red car"]  # the classes prompted (CLASSES' order differs)
REFER = ("sam_truck.jpg", [[75, 275, 1725, 850], [425, 600, 700, 875]], [0, 1])  # image, example boxes, labels


@pytest.fixture(scope="module")
def photos(shared_images) -> list[Path]:
    return [p for p in shared_images if p.name in PHOTOS]


@pytest.fixture(scope="module")
def text_encoder(session_tmp) -> Path:
    return make_text_encoder(session_tmp / "mobileclip_blt.ts")


@pytest.fixture(scope="module")
def yoloe11(session_tmp, shared_images, text_encoder, export_cache) -> tuple[Path, Path]:
    """``(checkpoint, folder)`` of a seeded YOLOE-11n-seg (one-to-many head, NMS)."""
    from segedge.export.yoloe import export_yoloe

    ckpt = make_yoloe_checkpoint(session_tmp / "yoloe-11n-seg.pt", "yoloe-11n-seg.yaml", shared_images, text_encoder)
    return ckpt, export_cache.folder(export_yoloe, ckpt, name="yoloe-11n-seg", text_encoder=str(text_encoder))


@pytest.fixture(scope="module")
def yoloe26(session_tmp, shared_images, text_encoder, export_cache) -> tuple[Path, Path]:
    """``(checkpoint, folder)`` of a seeded YOLOE-26n-seg (end-to-end head, top-k without NMS)."""
    from segedge.export.yoloe import export_yoloe

    ckpt = make_yoloe_checkpoint(session_tmp / "yoloe-26n-seg.pt", "yoloe-26n-seg.yaml", shared_images, text_encoder)
    return ckpt, export_cache.folder(export_yoloe, ckpt, name="yoloe-26n-seg", text_encoder=str(text_encoder))


def _matched(ours, ref, photo: str, flips: int = 0) -> int:
    """Every ultralytics detection has its own one of ours with the same class, box corners within 0.5 px and score
    within 1e-4, and their masks IoU >= 0.99; the counts equal. Order is not compared: pairs whose scores differ by
    float32 rounding swap places between backends. ``flips``: how many detections may instead be a knife-edge swap
    (ultralytics keeps one, we keep another that overlaps it, box IoU >= 0.5, both scored under 0.3, a few hundredths
    above the 0.25 threshold: a score at the proposal filter's or NMS's edge decided the other way). Returns how many
    were matched."""
    ref_boxes, ref_cls, ref_conf = (
        ref.boxes.xyxy.numpy(),
        ref.boxes.cls.numpy().astype(np.int64),
        ref.boxes.conf.numpy(),
    )
    assert len(ours) == len(ref_boxes), (photo, len(ours), len(ref_boxes))
    ref_masks = reference_masks(ref, ours.masks.shape[1:])
    free = np.ones(len(ours), bool)
    swapped = []
    for i in range(len(ref_boxes)):
        near = free & (ours.class_ids == ref_cls[i]) & (np.abs(ours.boxes - ref_boxes[i]).max(axis=1) <= 0.5)
        near &= np.abs(ours.scores - ref_conf[i]) <= 1e-4
        if not near.any():
            swapped.append(i)
            continue
        j = int(np.flatnonzero(near)[0])
        free[j] = False
        got, want = ours.masks[j], ref_masks[i]
        assert (got & want).sum() / max((got | want).sum(), 1) >= 0.99, (photo, i)
    assert len(swapped) <= flips, (photo, [(i, ref_boxes[i], ref_cls[i], ref_conf[i]) for i in swapped])
    for i in swapped:  # each pairs with one of ours left over (the counts are equal)
        left = np.flatnonzero(free)
        iou = box_iou(ref_boxes[i : i + 1], ours.boxes[left])[0]
        j = left[int(np.argmax(iou))]
        assert iou.max() >= 0.5 and max(ref_conf[i], ours.scores[j]) < 0.3, (photo, i, ref_boxes[i], ours.boxes[j])
        free[j] = False
    assert 0 < float(ours.masks.mean()) < 0.5  # masks neither empty nor full
    return len(ref_boxes) - len(swapped)


def test_text_encoder_and_tokens_match_the_torchscript_one(yoloe11, text_encoder):
    """Tokens = open_clip's tokenizer (the BPE ultralytics' clip.tokenize uses); class embeddings = ultralytics'
    get_text_pe with the TorchScript encoder (its reprta included, all 77 positions), cosine >= 0.9999, on both
    backends, from the folder's 24-token graph: 7 names of 1-22 tokens in one call of 8; a 23-token name refused in
    one line; one text-encoder call per new class, none for one seen."""
    import open_clip
    from ultralytics import YOLOE

    ckpt, folder = yoloe11
    longest = "a small red car parked beside the tall green tree at the left edge of the old road on a sunny day"  # 22
    names = [*NAMES, "traffic light", "a PHOTO of   dogs!", longest, "café au lait", "x" * 300]  # cut at 77 tokens
    torch_model = YOLOE(str(ckpt)).model
    expected = text_embeddings(torch_model, text_encoder, names[:8])[0].numpy()
    for backend in ("openvino", "onnxruntime"):
        model = Yoloe(folder, backend=backend, precision="f32")
        assert model.text_batch == (8, 24)
        tokens = np.concatenate([model.tokenizer(n) for n in names])
        assert np.array_equal(tokens, open_clip.tokenize(names).numpy())
        runs = _count_runs(model)
        got = model.embed_classes(names[:8])
        assert runs == {"text_encoder": 1}  # 8 new names, one call
        assert got.shape == (8, 512) and np.abs(got - expected).max() < 2e-5
        assert (np.sum(got * expected, axis=1) >= 0.9999).all()
        assert model.text_embeddings.encoder_calls == 8
        model.set_classes(names[:3] + ["zebra", "striped horse"])
        assert model.text_embeddings.encoder_calls == 10 and model.names == names[:3] + ["zebra", "striped horse"]
        assert runs == {"text_encoder": 2}  # two new names, one more call
        with pytest.raises(PromptError, match=r"longer than this folder's text encoder takes \(22 tokens"):
            model.set_classes([longest.replace("sunny", "sunny summer")])  # 23 BPE tokens
        assert model.names == names[:3] + ["zebra", "striped horse"]


def _count_runs(model: Yoloe) -> dict[str, int]:
    """``{graph: runs}`` of the graphs ``model`` compiles from now on, counted as they run."""
    runs: dict[str, int] = {}
    compile_graph = model._compile

    def counting(name, *args, **kwargs):
        compiled, runs[name] = compile_graph(name, *args, **kwargs), 0
        run = compiled.run

        def counted(feed):
            runs[name] += 1
            return run(feed)

        compiled.run = counted
        return compiled

    model._compile = counting
    return runs


def _text_parity(checkpoint: Path, folder: Path, text_encoder: Path, photos: list[Path], **reference_options) -> int:
    """Text prompts on both backends vs ultralytics' YOLOE predictor with set_classes(names, the same embeddings),
    one reference per photo; returns how many detections were matched."""
    embeddings = text_embeddings(_torch(checkpoint), text_encoder, NAMES)
    models = [Yoloe(folder, backend=b, precision="f32") for b in ("openvino", "onnxruntime")]
    for model in models:
        model.set_classes(NAMES)
    compared = 0
    for photo in photos:
        ref = ultralytics_yoloe_predict(checkpoint, photo, NAMES, embeddings, retina_masks=True, **reference_options)
        compared += sum(_matched(model.everything(photo), ref, photo.name) for model in models)
    return compared


def test_yoloe11_text_classes_match_ultralytics(yoloe11, text_encoder, photos):
    """YOLOE-11's one-to-many head with NMS across classes (ultralytics' YOLOE default): boxes within 0.5 px, masks
    IoU >= 0.99, on both backends."""
    ckpt, folder = yoloe11
    m = load_model_folder(folder).manifest
    assert (m.params["decoding"], m.params["agnostic"], m.params["class_slots"]) == ("nms", True, 80)
    assert m.graphs["model"].input("class_embeddings").shape == (1, 80, 512)
    assert _text_parity(ckpt, folder, text_encoder, photos) >= 2 * 60


def test_yoloe26_end_to_end_matches_ultralytics_without_nms(yoloe26, text_encoder, photos):
    """YOLOE-26's one-to-one head decoded by top-k (no NMS) = ultralytics' YOLOE predict with nms=False."""
    ckpt, folder = yoloe26
    assert load_model_folder(folder).manifest.params["decoding"] == "topk"
    assert _text_parity(ckpt, folder, text_encoder, photos[1:], nms=False) >= 2 * 50


@pytest.mark.parametrize("which", ["yoloe11", "yoloe26"])
def test_visual_prompts_match_ultralytics(which, request, shared_images, photos):
    """Boxes on a reference image -> SAVPE class embeddings -> detections on another photo, as ultralytics' YOLOE
    predict(refer_image=..., visual_prompts=...) with its YOLOEVPSegPredictor."""
    from ultralytics import YOLOE
    from ultralytics.models.yolo.yoloe import YOLOEVPSegPredictor

    ckpt, folder = request.getfixturevalue(which)
    refer = next(p for p in shared_images if p.name == REFER[0])
    boxes, labels = np.asarray(REFER[1], np.float32), np.asarray(REFER[2])
    target = next(p for p in photos if p.name != REFER[0])
    prompts = dict(bboxes=boxes.copy(), cls=labels)
    options = dict(imgsz=640, rect=False, device="cpu", verbose=False, retina_masks=True)
    if which == "yoloe26":
        options["nms"] = False
    ref = YOLOE(str(ckpt)).predict(
        str(target), refer_image=str(refer), visual_prompts=prompts, predictor=YOLOEVPSegPredictor, **options
    )[0]
    model = Yoloe(folder, backend="openvino", precision="f32")
    model.set_vocabulary(["object0", "object1"], model.refer(refer, boxes, labels))
    assert _matched(model.everything(target), ref, target.name) >= 30
    with pytest.raises(PromptError, match="one integer class label per box"):
        model.refer(refer, boxes, [0.5, 1])


def test_built_in_classes_are_the_default(yoloe11, photos):
    """A checkpoint that holds class embeddings (YOLOE.set_classes saved) keeps them: no prompt needed, ultralytics'
    predict on the checkpoint as it is."""
    ckpt, folder = yoloe11
    params = load_model_folder(folder).manifest.params
    assert params["default_classes"] == list(CLASSES)
    model = Yoloe(folder, backend="onnxruntime", precision="f32")
    assert model.names == list(CLASSES)
    from ultralytics import YOLOE

    ref = YOLOE(str(ckpt)).predict(
        str(photos[1]), imgsz=640, rect=False, device="cpu", verbose=False, retina_masks=True
    )
    assert _matched(model.everything(photos[1]), ref[0], photos[1].name) >= 20


def test_cli_text_and_visual_prompts(yoloe11, shared_images, photos, tmp_path, capsys):
    """`segment --text A B --refer-image I --refer-box ...`: text classes then the visual one, by name, in the JSON;
    wrong combinations are one line each."""
    _, folder = yoloe11
    refer = next(p for p in shared_images if p.name == REFER[0])
    box = ",".join(str(v) for v in REFER[1][0])
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "segment", str(photos[0]), "--model", str(folder), "--text", "person", "red car",
        "--refer-image", str(refer), "--refer-box", box, "--refer-name", "truck", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(next(out.glob("*.json")).read_text())
    names = {i["label"] for i in record["instances"]}
    assert record["count"] >= 20 and names <= {"person", "red car", "truck"} and "truck" in names
    for args, message in (
        (["--clip", str(folder), "--text", "dog"], "--clip is for FastSAM"),
        (["--refer-box", box], "needs both --refer-image"),
        (["--text", *[f"class {i}" for i in range(81)]], "at most 80 per call"),
        (["--text", "dog", "dog"], "class names repeat"),
    ):
        code, _, err = run_cli(capsys, "segment", str(photos[0]), "--model", str(folder), "--out", str(out), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_export_refusals(yoloe11, text_encoder, tmp_path):
    """A YOLO-seg checkpoint, a fused (fixed-vocabulary) YOLOE and a text encoder of another shape are refused in one
    line before anything is written."""
    import torch
    from helpers import save_ultralytics_checkpoint
    from ultralytics import YOLOE
    from ultralytics.nn.tasks import SegmentationModel

    from segedge.export.yoloe import export_yoloe

    ckpt, _ = yoloe11
    yolo = SegmentationModel("yolo11n-seg.yaml", verbose=False)
    yolo = save_ultralytics_checkpoint(
        yolo, tmp_path / "yolo11n-seg.pt", "yolo11n-seg.yaml", 640, "8.4.0", "2026-01-14"
    )
    with pytest.raises(CheckpointError, match="not YOLOE's; YOLO-seg checkpoints export with `segedge export yolo`"):
        export_yoloe(yolo, tmp_path / "a", text_encoder=text_encoder)
    fused = YOLOE(str(ckpt))
    fused.model.model[-1].fuse(fused.model.pe)
    fused.save(tmp_path / "fused.pt")
    with pytest.raises(CheckpointError, match="class embeddings fused into the head"):
        export_yoloe(tmp_path / "fused.pt", tmp_path / "b", text_encoder=text_encoder)
    torch.save({"token_embedding.weight": torch.zeros(10, 8)}, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match="does not fit MobileCLIP-B's text encoder"):
        export_yoloe(ckpt, tmp_path / "c", text_encoder=tmp_path / "small.pt")
    assert not any((tmp_path / n).exists() for n in "abc")


# classes kept per anchor: YOLOE-11's folder keeps all 14 (--class-topk, and what val compares with ultralytics' val
# needs), YOLOE-26's the default 8
PF_TOPK = {"yoloe11": 14, "yoloe26": 8}


@pytest.fixture(scope="module")
def prompt_free(yoloe11, yoloe26, text_encoder, shared_images, session_tmp, export_cache):
    """``prompt_free(which) -> (checkpoint, folder)``: the prompt-free checkpoint made from the seeded ``which`` one
    (``"yoloe11"``, ``"yoloe26"``) and its folder, made once for the module (two tests read YOLOE-11's). The seeded
    ones are set up here, outside any test's captured output: ultralytics binds its log handler to the stream of its
    first import, and a test's ``capsys`` stream is closed after it."""
    from yoloe_helpers import make_prompt_free_checkpoint

    from segedge.export.yoloe import export_yoloe

    made: dict[str, tuple[Path, Path]] = {}

    def get(which: str) -> tuple[Path, Path]:
        if which not in made:
            ckpt, _ = {"yoloe11": yoloe11, "yoloe26": yoloe26}[which]
            pf = make_prompt_free_checkpoint(session_tmp / f"{which}-pf.pt", ckpt, text_encoder, shared_images)
            made[which] = pf, export_cache.folder(export_yoloe, pf, name=f"{which}-pf", class_topk=PF_TOPK[which])
        return made[which]

    return get


@pytest.mark.parametrize("which", ["yoloe11", "yoloe26"])
def test_prompt_free_matches_ultralytics(which, prompt_free, photos, session_tmp, capsys):
    """A prompt-free (-pf) checkpoint (ultralytics' set_vocab recipe on the seeded one, 14 names, a third of the
    P3/P4 anchors below its proposal filter) exports with its fixed vocabulary; on both backends every detection is
    matched to ultralytics' YOLOE predictor on the -pf checkpoint (class, box 0.5 px, score 1e-4, mask IoU >= 0.99;
    YOLOE-11: NMS on each anchor's best class, YOLOE-26: top-k), but for at most one knife-edge swap per photo
    (measured on a native-bf16 EPYC, OpenVINO: of sam_groceries.jpg's 261 YOLOE-11 detections, ultralytics kept a
    class-11 box scored 0.256 where ours kept an overlapping class-5 box scored 0.271, box IoU 0.86); the graph drops
    the anchors ultralytics' filter drops; class names and visual prompts are refused in one line."""
    from yoloe_helpers import PF_VOCABULARY

    from segedge.export.yoloe_prompt_free import DROPPED

    pf, folder = prompt_free(which)
    m = load_model_folder(folder).manifest
    topk = PF_TOPK[which]
    assert m.params["prompt_free"] and m.classes == list(PF_VOCABULARY) and m.params["class_topk"] == topk
    assert set(m.graphs) == {"model"} and m.params["decoding"] == ("topk" if which == "yoloe26" else "nms")
    refs = {photo.name: ultralytics_yoloe_predict(pf, photo, None, None, retina_masks=True) for photo in photos}
    compared = 0
    for backend in ("openvino", "onnxruntime"):
        model = Yoloe(folder, backend=backend, precision="f32")
        for photo in photos:
            compared += _matched(model.everything(photo), refs[photo.name], photo.name, flips=1)
        (_, logits, _, ids), _ = model.infer(model.preprocess(read_image(photos[0]))[0])
        p3_p4 = logits[0, : 80 * 80 + 40 * 40, 0]
        assert 0.15 < float((p3_p4 == DROPPED).mean()) < 0.5 and not (logits[0, 80 * 80 + 40 * 40 :] == DROPPED).any()
        assert ids.shape == logits.shape == (1, 8400, topk) and (np.diff(logits[0], axis=1) <= 0).all()
        with pytest.raises(PromptError, match="fixed vocabulary of 14 classes and takes no class names"):
            model.set_classes(["cat"])
        with pytest.raises(PromptError, match="fixed vocabulary of 14 classes and takes no visual prompts"):
            model.refer(photos[0], [[0, 0, 9, 9]])
    assert compared >= (300 if which == "yoloe11" else 400), compared
    code, _, err = run_cli(
        capsys,
        "segment",
        str(photos[0]),
        "--model",
        str(folder),
        "--text",
        "cat",
        "--out",
        str(session_tmp / f"{which}-pf-out"),
    )
    assert code == 2 and "fixed vocabulary" in err and len(err.strip().splitlines()) == 1, err


def test_text_tower_reads_mobileclip_names(text_encoder, tmp_path):
    """ultralytics' mobileclip_blt.ts holds apple's MobileCLIP names (``text_encoder.embedding_layer``, ...): the same
    tensors under those names give the same text tower as under open_clip's."""
    import open_clip
    import torch

    from segedge.export.text_tower import load_text_tower, read_tensors

    rules = {
        "token_embedding.weight": "embedding_layer.weight",
        "ln_final.": "final_layer_norm.",
        "text_projection": "projection_layer",
        "ln_1.": "pre_norm_mha.0.",
        "attn.in_proj_": "pre_norm_mha.1.qkv_proj.",
        "attn.out_proj.": "pre_norm_mha.1.out_proj.",
        "ln_2.": "pre_norm_ffn.0.",
        "mlp.c_fc.": "pre_norm_ffn.1.",
        "mlp.c_proj.": "pre_norm_ffn.4.",
        "resblocks.": "",
    }
    apple = {"text_encoder.image_encoder_is_ignored": torch.zeros(3)}
    for key, value in read_tensors(text_encoder)[0].items():
        if not key.startswith("clip.text.") or key.endswith("attn_mask"):
            continue
        name = key.removeprefix("clip.text.")
        if name == "positional_embedding":
            apple["text_encoder.positional_embedding.pos_embed.pos_embed"] = value.reshape(1, 1, *value.shape)
            continue
        for old, new in rules.items():
            name = name.replace(old, new)
        apple["text_encoder." + name] = value
    assert len(apple) == 1 + 5 + 12 * 12
    torch.save(apple, tmp_path / "apple.pt")
    tokens = open_clip.tokenize(NAMES)
    with torch.no_grad():
        ours = load_text_tower("mobileclip:blt", tmp_path / "apple.pt").encode_text(tokens)
        theirs = load_text_tower("mobileclip:blt", text_encoder).encode_text(tokens)
    assert ours.shape == (4, 512) and torch.equal(ours, theirs)


def _torch(checkpoint: Path):
    from ultralytics import YOLOE

    return YOLOE(str(checkpoint)).model


def test_the_page_api_and_label_studio_ask_for_classes_by_name(yoloe11, photos, tmp_path):
    """The server: /api/models offers text (the classes to find), a text prompt "person, red car" and /api/everything's
    classes run those classes, no text runs the built-in ones; Label Studio's pre-annotation asks for the project's
    labels by name (predicted_values included) and stores each detection under its label."""
    import shutil

    from segedge.serve.label_studio import LabelStudioBackend
    from segedge.serve.ls_images import LabelStudioAccess
    from segedge.serve.served import ServedModel
    from segedge.serve.service import SegmentService

    _, folder = yoloe11
    served = ServedModel("ye", "yoloe", Yoloe(folder, backend="openvino", precision="f32"))
    service = SegmentService([served])
    info = served.info(text=False)
    assert "text" in info["prompts"] and info["text_names_classes"] and info["classes"] == list(CLASSES)
    image_id = service.add_image(photos[0].read_bytes())["image_id"]
    direct = Yoloe(folder, backend="openvino", precision="f32")
    builtin = direct.everything(photos[0])
    direct.set_classes(["person", "red car"])
    expected = direct.everything(photos[0])
    body = service.predict(None, image_id, text="person, red car")
    assert body["count"] == len(expected) >= 20 and [i["label"] for i in body["instances"]] == expected.labels
    body = service.everything(None, image_id)
    assert body["count"] == len(builtin) >= 20 and [i["label"] for i in body["instances"]] == builtin.labels
    direct.set_classes(["bus"])
    assert service.everything(None, image_id, classes=["bus"])["count"] == len(direct.everything(photos[0])) >= 5
    with pytest.raises(PromptError, match="class names separated by commas"):
        service.predict(None, image_id, text=" , ")

    config = """<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">
      <Label value="people" predicted_values="person"/><Label value="red car"/></BrushLabels></View>"""
    shutil.copyfile(photos[0], tmp_path / "photo.jpg")
    backend = LabelStudioBackend(service, LabelStudioAccess(None, None, tmp_path))
    task = {"id": 1, "data": {"image": "/data/local-files/?d=photo.jpg"}}
    regions = backend.predict(None, {"tasks": [task], "label_config": config})["results"][0]["result"]
    got = sorted(r["value"]["brushlabels"][0] for r in regions)
    assert got == sorted({"person": "people", "red car": "red car"}[n] for n in expected.labels)


def test_the_pages_text_box_finds_the_classes_it_names(yoloe11, photos):
    """In headless Chromium: a YOLOE folder shows the text box (its placeholder names classes); Everything on an
    opened photo lists the built-in classes; typing "person, red car" and Enter lists those classes only, and every
    mask the page holds equals ``Yoloe.everything``'s with those classes, pixel for pixel."""
    from test_serve_browser import _answered, _rows, _unpack, served_page

    from segedge.serve.app import create_app
    from segedge.serve.service import SegmentService

    _, folder = yoloe11
    photo = photos[0]
    direct = Yoloe(folder, backend="openvino", precision="f32")
    builtin = direct.everything(photo)
    direct.set_classes(["person", "red car"])
    expected = direct.everything(photo)
    h, w = read_image(photo).shape[:2]
    assert (
        len(expected) >= 10
        and set(expected.labels) == {"person", "red car"}
        and set(builtin.labels) - {"person", "red car"}
    )
    service = SegmentService.from_folders([folder], backend="openvino", precision="f32")
    with served_page(create_app(service)) as page:
        assert page.is_visible("#text") and page.get_attribute("#text", "placeholder").startswith(
            "classes to find, e.g. "
        )
        page.set_input_files("#file", str(photo))
        page.wait_for_function("window.segedge.state.prepared", timeout=60_000)
        page.click("#everything")
        state = _answered(page, 1)
        assert [i["label"] for i in state["response"]["instances"]] == builtin.labels
        page.fill("#text", "person, red car")
        page.press("#text", "Enter")
        state = _answered(page, 2)
        assert state["kind"] == "prompt" and state["response"]["count"] == len(expected)
        assert [i["label"] for i in state["response"]["instances"]] == expected.labels
        assert [r["name"] for r in _rows(page)] == [f"{i + 1} {label}" for i, label in enumerate(expected.labels)]
        for bits, mask in zip(state["bits"], expected.masks, strict=True):
            assert (_unpack(bits, (h, w)) == mask).all()


VAL_OPTIONS = dict(imgsz=640, batch=1, rect=False, plots=False, verbose=False, device="cpu", save_json=False)


def _ultralytics_val(checkpoint: Path, data: Path, project: Path) -> dict[str, float]:
    from ultralytics import YOLOE

    r = YOLOE(str(checkpoint)).val(data=str(data), project=str(project), **VAL_OPTIONS)
    return {"box_mAP50-95": r.box.map, "box_mAP50": r.box.map50, "mask_mAP50-95": r.seg.map, "mask_mAP50": r.seg.map50}


def _same_metrics(result: dict, expected: dict[str, float], tolerance: float) -> None:
    for row in result["rows"]:
        for name, value in expected.items():
            print(f"{row['backend']} {name}: segedge {row['metrics'][name]:.4f}, ultralytics {value:.4f}")
            assert abs(row["metrics"][name] - value) <= tolerance, (row["backend"], name, row["metrics"][name], value)


def test_val_prompts_the_data_names_as_ultralytics_yoloe_val_does(yoloe11, text_encoder, tmp_path, monkeypatch):
    """`segedge val` on a prompted YOLOE folder detects the data's class names (ultralytics' YOLOE val: its names are
    the text prompts, not the checkpoint's built-in classes): box and mask mAP equal to ``YOLOE(...).val`` within 0.005
    on OpenVINO (val's code is NumPy after the graph; the graphs' backend parity: the prompt tests above), on labels
    the seeded model finds (its own predictions of NAMES at conf 0.5)."""
    from ultralytics import YOLOE
    from ultralytics.nn.tasks import YOLOEModel
    from yolo_helpers import LABELLED_IMAGES, pseudo_labelled

    from segedge.evaluation.val import run_val

    ckpt, folder = yoloe11
    labeller = YOLOE(str(ckpt))
    labeller.set_classes(NAMES, text_embeddings(labeller.model, text_encoder, NAMES))
    options = dict(imgsz=640, rect=False, device="cpu", verbose=False, conf=0.5)
    images = sorted((SHARED / "coco128-seg" / "images").glob("*.jpg"))
    data = pseudo_labelled(lambda p: labeller.predict(str(p), **options)[0], images, tmp_path / "pseudo", NAMES)
    # ultralytics' val embeds the names with its text model (a download): the same seeded encoder instead
    monkeypatch.setattr(
        YOLOEModel, "get_text_pe", lambda self, names, *a, **k: text_embeddings(self, text_encoder, names)
    )
    expected = _ultralytics_val(ckpt, data, tmp_path / "ultra-val")
    result = run_val(folder, data, backends=["openvino"], precisions=["f32"], progress=False)
    assert result["data"]["images"] == LABELLED_IMAGES and result["data"]["instances"] >= 100
    assert expected["box_mAP50-95"] > 0.2  # the labels are found: a comparison of real numbers
    _same_metrics(result, expected, 0.005)


def test_val_of_a_prompt_free_folder_matches_its_vocabulary_by_name(prompt_free, tmp_path, capsys):
    """A prompt-free folder keeps its vocabulary; val matches the data's class names to it by name. With all 14
    classes kept per anchor (--class-topk 14) it equals ultralytics' val of the -pf checkpoint within 0.005
    (OpenVINO); listing the names in another order gives the same numbers; a name the vocabulary lacks is refused in
    one line."""
    from ultralytics import YOLOE
    from yolo_helpers import pseudo_labelled
    from yoloe_helpers import PF_VOCABULARY

    from segedge.evaluation.val import run_val

    pf, folder = prompt_free("yoloe11")
    assert load_model_folder(folder).manifest.params["class_topk"] == len(PF_VOCABULARY)
    labeller, options = YOLOE(str(pf)), dict(imgsz=640, rect=False, device="cpu", verbose=False, conf=0.5)
    images = sorted((SHARED / "coco128-seg" / "images").glob("*.jpg"))
    data = pseudo_labelled(lambda p: labeller.predict(str(p), **options)[0], images, tmp_path / "pf", PF_VOCABULARY)
    expected = _ultralytics_val(pf, data, tmp_path / "ultra-val")
    result = run_val(folder, data, backends=["openvino"], precisions=["f32"], progress=False)
    assert result["data"]["instances"] >= 100 and expected["box_mAP50-95"] > 0.05
    _same_metrics(result, expected, 0.005)

    # the same labels under the vocabulary's names in reverse order: the same numbers
    reverse = tmp_path / "reverse"
    (reverse / "labels").mkdir(parents=True)
    (reverse / "images").symlink_to(tmp_path / "pf" / "images")
    last = len(PF_VOCABULARY) - 1
    for path in (tmp_path / "pf" / "labels").glob("*.txt"):
        rows = [line.split(" ", 1) for line in path.read_text().splitlines() if line]
        (reverse / "labels" / path.name).write_text("".join(f"{last - int(c)} {rest}\n" for c, rest in rows))
    listed = "".join(f"  {i}: {name}\n" for i, name in enumerate(reversed(PF_VOCABULARY)))
    (reverse / "data.yaml").write_text(f"path: {reverse}\ntrain: images\nval: images\nnames:\n{listed}")
    again = run_val(folder, reverse / "data.yaml", backends=["openvino"], precisions=["f32"], progress=False)
    ours = result["rows"][0]["metrics"]
    assert again["rows"][0]["metrics"] == pytest.approx(ours, abs=1e-9)  # classes averaged in another order

    (reverse / "data.yaml").write_text(f"path: {reverse}\ntrain: images\nval: images\nnames:\n{listed}  14: unicorn\n")
    code, _, err = run_cli(capsys, "val", str(folder), "--data", str(reverse), "--backend", "openvino")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "1 of the data's 15 classes are not in this prompt-free folder's vocabulary of 14 names ('unicorn')" in err
