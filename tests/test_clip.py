"""CLIP for FastSAM text prompts: tokenizer, exported encoders, preprocessing, and the selection,
each against its reference (open_clip's tokenizer and model, ultralytics' FastSAM text prompt)."""

import socket
import string
import sys
import types

import numpy as np
import pytest
import torch

from export_cache import linked_copy
from helpers import OpenClipForUltralytics, make_clip_checkpoint, mask_iou, run_cli
from segedge.errors import CheckpointError, ModelFolderError, PromptError, SegedgeError
from segedge.export.clip import export_clip
from segedge.runtime.clip import Clip, clip_preprocess
from segedge.runtime.clip_tokenizer import ClipTokenizer
from segedge.runtime.fastsam import FastSam


@pytest.fixture(scope="module")
def reference_clip(clip_ckpt):
    return OpenClipForUltralytics(clip_ckpt)


# -- tokenizer --------------------------------------------------------------------------------------

POOLS = [
    string.ascii_letters,
    string.digits,
    string.punctuation,
    " \t\n\u00a0\u3000",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžÀÉÎÕÜ",
    "e\u0301a\u0300o\u0308",  # precomposed and combining accents
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "あいうえおかきくけこアイウエオ漢字",
    "가나다라마바사",
    "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВ",
    "αβγδεζηθλμξπσφψωΩΣ",
    "אבגדהוזחטי",
    "مرحبابالعالم",
    "हिन्दीपाठ",
    "ภาษาไทย",
    "😀🐕🎉👍🏽❤️🇫🇷",
    "²³½¼Ⅻ①٣٤",
    "“”‘’«»—–…•€£¥©®™",
    "&amp;&lt;&gt;&quot;&#39;",
    "'s 't 're 've 'm 'll 'd",
]


def random_texts(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pools = rng.choice(len(POOLS), size=rng.integers(1, 4), replace=False)
        chars = "".join(POOLS[p] for p in pools)
        length = int(rng.choice([0, 1, 3, 8, 20, 60, 200]))
        out.append("".join(rng.choice(list(chars), size=length)))
    return out


FIXED = [
    "the yellow dog",
    "",
    "  A photo of   a CAT!!! ",
    "don't you'll they're I'M",
    "naïve café résumé über",
    "北京的猫 和 狗",
    "🐕 dog emoji 🎉🎉",
    "x² + y³ = ½ Ⅻ",
    "&amp; &lt;b&gt; &amp;amp;",
    "“curly” ‘quotes’",
    "<start_of_text> inside",
    "ﬁne ligature",
    "long " * 100,
    "a" * 300,
    "'s'S's 'T'T",
    "__under_score__",
]


def test_tokenizer_matches_open_clip(clip_folder):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    ours = ClipTokenizer(clip_folder / "bpe_simple_vocab_16e6.txt.gz")
    texts = FIXED + random_texts(1500)
    expected = reference(texts).numpy()
    got = ours(texts)
    assert got.shape == (len(texts), 77) and got.dtype == np.int64
    bad = [texts[i] for i in range(len(texts)) if not np.array_equal(got[i], expected[i])]
    assert not bad, f"{len(bad)} texts differ, e.g. {bad[:3]!r}"
    assert (got[:, -1] != 0).sum() >= 10  # long texts were truncated, ending with <end_of_text>
    assert set(got[got[:, -1] != 0, -1].tolist()) == {49407}


def test_tokenizer_without_ftfy_on_ordinary_text(clip_folder, monkeypatch):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    monkeypatch.setitem(sys.modules, "ftfy", None)  # `import ftfy` fails: the built-in cleaning runs
    ours = ClipTokenizer(clip_folder / "bpe_simple_vocab_16e6.txt.gz")
    ordinary = FIXED + [
        "A man riding a horse on the beach.",
        "Zwei Hunde spielen im Schnee",
        "一只黄色的狗",
        "“quoted” words",
        "ＦＵＬＬ　ｗｉｄｔｈ１２３",
        "a &lt;tag&gt; &amp; <b>bold</b> &amp;",
    ]
    np.testing.assert_array_equal(ours(ordinary), reference(ordinary).numpy())


# -- encoders and preprocessing ----------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(224, 224), (100, 37), (37, 100), (500, 300), (3, 400), (224, 225), (641, 480)])
def test_preprocess_matches_clip_transform(reference_clip, hw):
    from PIL import Image

    img = np.random.default_rng(hw[0] * hw[1]).integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    ref = reference_clip.image_preprocess(Image.fromarray(img)).numpy()
    ours = clip_preprocess(img, 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_embeddings_match_pytorch(clip_folder, reference_clip, backend):
    clip = Clip(clip_folder, backend=backend, precision="f32")
    texts = ["the yellow dog", "a photo of a cat", "北京", ""]
    ref_text = reference_clip.encode_text(reference_clip.tokenize(texts)).numpy()
    text_err = np.abs(clip.encode_text(texts) - ref_text).max()
    rng = np.random.default_rng(0)
    crops = [
        rng.integers(0, 256, size=(int(rng.integers(20, 300)), int(rng.integers(20, 300)), 3), dtype=np.uint8)
        for _ in range(11)
    ]
    from PIL import Image

    ref_img = reference_clip.encode_image(
        torch.stack([reference_clip.image_preprocess(Image.fromarray(c)) for c in crops])
    ).numpy()
    img_err = np.abs(clip.encode_images(crops) - ref_img).max()  # 11 crops: one full and one padded batch of 8
    print(f"{backend}: text embedding err {text_err:.2e}, image embedding err {img_err:.2e}")
    assert text_err < 1e-4 and img_err < 1e-4


# -- the text prompt, against ultralytics --------------------------------------------------------------


def _ultralytics_results(result):
    """Our masks and boxes as an ultralytics Results, so both selections see the same masks."""
    from ultralytics.engine.results import Results

    boxes = np.concatenate([result.boxes, result.scores[:, None], result.class_ids[:, None].astype(np.float32)], axis=1)
    return Results(
        np.ascontiguousarray(result.image[:, :, ::-1]),
        path="x.jpg",
        names=dict(enumerate(result.names)),
        boxes=torch.from_numpy(boxes),
        masks=torch.from_numpy(result.masks.astype(np.uint8)),
    )


def test_text_prompt_matches_ultralytics(
    real_folder_640, real_checkpoint, clip_folder, reference_clip, shared_images, monkeypatch
):
    """FastSAM's text prompt through CLIP equals ultralytics' (OpenVINO; the selection after the graphs is NumPy, and
    CLIP's ONNX Runtime graphs are compared with PyTorch in test_embeddings_match_pytorch)."""
    backend = "openvino"
    monkeypatch.setitem(sys.modules, "clip", types.ModuleType("clip"))  # ultralytics imports it; we bring our own
    from ultralytics import FastSAM

    reference = FastSAM(str(real_checkpoint))
    reference.predict(str(shared_images[0]), imgsz=640, conf=0.25, verbose=False)
    predictor = reference.predictor
    predictor.clip = reference_clip
    recorded = {}
    original = predictor._clip_inference

    def record(images, texts):
        recorded["similarity"] = original(images, texts)
        return recorded["similarity"]

    monkeypatch.setattr(predictor, "_clip_inference", record)
    model = FastSam(real_folder_640, backend=backend, precision="f32")
    clip = Clip(clip_folder, backend=backend, precision="f32")
    texts = ["the yellow dog", "a person", "a bus"]
    compared = 0
    for path in shared_images:
        everything = model.everything(path, conf=0.1)  # many masks to choose from
        if len(everything) < 2:
            continue
        ours = model.prompt(everything, texts=texts, clip=clip)
        keep, similarity = model.text_similarity(everything, texts, clip)
        ref = predictor.prompt(_ultralytics_results(everything), texts=texts)[0]
        ref_masks = ref.masks.data.numpy().astype(bool)
        assert len(ours) == len(ref_masks) >= 1 and all(m.any() for m in ours.masks)  # masks chosen, none empty
        assert all(any(mask_iou(a, b) == 1.0 for b in ref_masks) for a in ours.masks)
        np.testing.assert_allclose(similarity, recorded["similarity"].numpy(), atol=1e-3)
        compared += 1
    assert compared >= 3


def test_text_prompt_errors(real_folder_640, clip_folder, shared_images, tmp_path):
    model = FastSam(real_folder_640, backend="onnxruntime")
    result = model.everything(shared_images[0])
    with pytest.raises(PromptError, match="text prompts need a CLIP model"):
        model.prompt(result, texts="a dog")
    with pytest.raises(ModelFolderError, match="segedge export clip --checkpoint ViT-B-32.pt"):
        Clip(tmp_path / "no-clip-here")
    broken = linked_copy(clip_folder, tmp_path / "broken-clip")  # hard links: removing one leaves the cache's
    (broken / "text_encoder.bin").unlink()
    with pytest.raises(ModelFolderError, match=r"text_encoder\.bin .*missing.*segedge export clip"):
        Clip(broken, verify=False)
    with pytest.raises(ModelFolderError, match="holds a fastsam model, not a clip model"):
        Clip(real_folder_640)


def test_segment_refuses_a_clip_folder_as_the_model(clip_folder, shared_images, tmp_path, capsys):
    """CLIP encodes images and texts but segments nothing: `segment --model CLIP_DIR` says so in one line (through
    the registry's segments_images), before any image is read, and writes nothing."""
    from segedge.runtime.stream import segment_stages

    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "segment", shared_images[0], "--model", clip_folder, "--out", out, "--quiet")
    assert code == 2 and "is a CLIP folder, which does not segment images" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    with pytest.raises(SegedgeError, match="CLIP folders do not segment images"):
        segment_stages(Clip(clip_folder, backend="onnxruntime"))


def test_nothing_touches_the_network(clip_folder, real_folder_640, shared_images, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from segedge.postprocess.prompts import text_crops

    clip = Clip(clip_folder, backend="onnxruntime")
    model = FastSam(real_folder_640, backend="onnxruntime")
    bus = next(p for p in shared_images if p.name == "ultralytics_bus.jpg")
    everything = model.everything(bus, conf=0.25)
    keep, _ = text_crops(everything.image, everything.roi_masks, everything.boxes)
    assert len(keep) >= 2, len(keep)  # CLIP had masks to choose among (measured 6)
    out = model.segment(bus, texts="a bus", clip=clip, conf=0.25)
    assert len(out) == 1 and any(np.array_equal(out.masks[0], everything.masks[i]) for i in keep)  # one of them


def test_export_formats_and_errors(clip_ckpt, session_tmp, tmp_path):
    from segedge.export.clip import load_clip_state

    state, fmt = load_clip_state(clip_ckpt)
    assert fmt == "openai-torchscript"
    plain = make_clip_checkpoint(tmp_path / "open_clip.bin", "open_clip")
    state2, fmt2 = load_clip_state(plain)
    assert fmt2 == "state_dict" and set(state2) == set(state)
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, tmp_path / "sam.pth")
    with pytest.raises(CheckpointError, match="not a CLIP checkpoint .*SAM"):
        export_clip(tmp_path / "sam.pth", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_text_prompt(real_folder_640, clip_folder, shared_images, tmp_path, capsys):
    """`segment --clip --text` in a fresh process writes the API's choice, one of 7 masks; the usage errors (in
    process: only their message is tested) say how to make a CLIP folder, in one line."""
    import json
    import subprocess

    from segedge.cli import main

    bus = next(p for p in shared_images if p.name == "ultralytics_bus.jpg")
    run = ["segment", str(bus), "--model", str(real_folder_640), "--out", str(tmp_path / "o")]
    chosen = ["--clip", str(clip_folder), "--text", "a bus", "--conf", "0.1", "--backend", "onnxruntime"]
    proc = subprocess.run(
        [sys.executable, "-m", "segedge", *run, *chosen, "--precision", "f32"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "o" / "ultralytics_bus_segedge.json").read_text())
    model = FastSam(real_folder_640, backend="onnxruntime", precision="f32")
    assert len(model.everything(bus, conf=0.1)) >= 2  # a choice among several masks (measured 7)
    clip = Clip(clip_folder, backend="onnxruntime", precision="f32")
    expected = model.segment(bus, texts="a bus", clip=clip, conf=0.1).to_dict()["instances"]
    assert written["count"] == len(expected) == 1 and written["instances"] == expected  # the same mask, RLE and all
    assert main(run + ["--text", "a bus"]) == 2
    err = capsys.readouterr().err
    assert "--text needs --clip" in err and "segedge export clip" in err and len(err.strip().splitlines()) == 1
    assert main(run + ["--clip", str(tmp_path / "nothing"), "--text", "a dog"]) == 2
    err = capsys.readouterr().err
    assert "segedge export clip" in err and len(err.strip().splitlines()) == 1


def test_quantize_clip_image_encoder(clip_folder, shared_images, tmp_path):
    """int8 for CLIP's image encoder (the text encoder stays f32), gated on embedding cosine."""
    from segedge.export.quantize import quantize_folder
    from segedge.imageio import read_image
    from segedge.manifest import load_model_folder

    folder = linked_copy(clip_folder, tmp_path / "clip-int8")  # quantize writes new files and a new segedge.json
    section = quantize_folder(
        folder, shared_images, backends=("openvino",), min_held_out=1, measure_speed=False, log=print
    )  # (the speed record is tested with FastSAM and SAM folders in test_quantize.py)
    assert set(section["graphs"]) == {"image_encoder"}
    cosine = section["agreement"]["openvino"]["embedding_cosine"]
    assert section["gate"]["metric"] == "embedding_cosine" and cosine >= 0.98
    load_model_folder(folder)  # int8 files listed and verified
    # gated on 1 held-out photo (min_held_out=1, to keep the suite short): auto stays f32; int8 runs when asked for
    assert Clip(folder, backend="openvino").precision == "f32"
    clip = Clip(folder, backend="openvino", precision="int8")
    assert clip.precision == "int8" and clip.image_encoder.precision == "int8" and clip.text_encoder.precision == "f32"
    f32 = Clip(folder, backend="openvino", precision="f32")
    crops = [read_image(p)[:300, :300] for p in shared_images]
    measured = float(np.mean(np.sum(clip.encode_images(crops) * f32.encode_images(crops), axis=1)))
    print(f"CLIP int8 vs f32 image embeddings: cosine {measured:.4f} (gate on held-out crops: {cosine:.4f})")
    assert measured >= 0.98
    np.testing.assert_array_equal(clip.encode_text("a dog"), f32.encode_text("a dog"))
