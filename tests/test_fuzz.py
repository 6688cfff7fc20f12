"""Property-based fuzzing (hypothesis): every input gives a valid result or a one-line SegedgeError,
never another exception and never a partial file.

Inputs: image bytes (valid, truncated, mutated, random) and arrays; FastSAM and SAM prompts (any
floats incl. NaN/inf/huge, any shapes); manifests (any field replaced or removed); CLI arguments.
The default suite runs a fixed, derandomized budget per test (seconds); ``benchmarks/fuzz.sh``
runs each with ``SEGEDGE_FUZZ_EXAMPLES=10000``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from segedge.cli import main
from segedge.errors import SegedgeError
from segedge.imageio import read_image
from segedge.manifest import MANIFEST_NAME
from segedge.runtime.fastsam import FastSam
from segedge.runtime.sam import Sam

pytestmark = pytest.mark.fuzz


def budget(default: int) -> int:
    return int(os.environ.get("SEGEDGE_FUZZ_EXAMPLES", default))


def fuzz_settings(default: int):
    return settings(
        max_examples=budget(default),
        deadline=None,
        derandomize="SEGEDGE_FUZZ_EXAMPLES" not in os.environ,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
        database=None,
    )


def assert_clean_error(exc: BaseException) -> None:
    assert isinstance(exc, SegedgeError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and len(text) < 1000, text


def attempt(fn, *args, **kwargs):
    """``fn``'s result, or None once it raised: then the error must be a one-line SegedgeError."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        assert_clean_error(exc)
        return None


# -- image bytes and arrays -----------------------------------------------------------------------
FORMATS = ["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"]


@st.composite
def encoded_images(draw):
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "I;16"]))
    seed = draw(st.integers(0, 2**16))
    fmt = draw(st.sampled_from(FORMATS))
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(arr).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
        fmt = "PNG"
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    data = buf.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "mutate", "splice"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "mutate":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    elif damage == "splice":
        data = data[: len(data) // 2] + draw(st.binary(max_size=64)) + data[len(data) // 2 :]
    return data


@fuzz_settings(300)
@given(st.one_of(encoded_images(), st.binary(max_size=512)))
def test_image_bytes(data):
    rgb = attempt(read_image, data)
    if rgb is None:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    assert rgb.shape[0] >= 1 and rgb.shape[1] >= 1


@fuzz_settings(300)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.bool_, np.int32, np.int8, np.complex64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_image_arrays(arr):
    rgb = attempt(read_image, arr)
    if rgb is None:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[:2] == arr.shape[:2]


# -- prompts --------------------------------------------------------------------------------------
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
    st.floats(-50, 2000),
    st.sampled_from([0, 1, -1, 0.5, 809.9, 810, 1079.5, 1080]),
)
prompt_values = st.one_of(
    st.none(),
    numbers,
    st.text(max_size=5),
    st.lists(numbers, max_size=6),
    st.lists(st.lists(numbers, min_size=0, max_size=5), max_size=4),
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    ),
    # mostly valid prompts on the 810x1080 test image, so the full decode path runs often
    st.lists(st.tuples(st.floats(0, 809.9), st.floats(0, 1079.9)), min_size=1, max_size=4),
    st.tuples(st.floats(0, 400), st.floats(0, 500), st.floats(401, 810), st.floats(501, 1080)),
    st.lists(st.sampled_from([0, 1]), min_size=1, max_size=4),
)


@pytest.fixture(scope="module")
def fastsam_everything(real_folder_640, bus):
    model = FastSam(real_folder_640, backend="onnxruntime", precision="f32")
    return model, model.everything(bus)


@fuzz_settings(300)
@given(points=prompt_values, labels=prompt_values, boxes=prompt_values)
def test_fastsam_prompts(fastsam_everything, points, labels, boxes):
    model, everything = fastsam_everything
    out = attempt(model.prompt, everything, points=points, point_labels=labels, boxes=boxes)
    if out is None:
        return
    assert 0 <= len(out) <= len(everything) and out.masks.shape[1:] == everything.masks.shape[1:]


@pytest.fixture(scope="module")
def sam_with_image(sam_tiny_folder, bus):
    model = Sam(sam_tiny_folder, backend="onnxruntime", precision="f32")
    return model, model.embed(bus)


@fuzz_settings(100)
@given(
    points=prompt_values,
    labels=prompt_values,
    box=prompt_values,
    mask=st.one_of(
        st.none(),
        hnp.arrays(
            np.float32,
            st.sampled_from([(256, 256), (1, 256, 256), (2, 256, 256), (3,)]),
            elements=st.floats(-1e6, 1e6, width=32),
        ),
    ),
    multimask=st.booleans(),
)
def test_sam_prompts(sam_with_image, points, labels, box, mask, multimask):
    model, image = sam_with_image
    out = attempt(model.predict, points, labels, box, mask, multimask_output=multimask, image=image)
    if out is None:
        return
    masks, scores, low = out
    c = 3 if multimask else 1
    assert masks.shape[-3:] == (c, 1080, 810) and masks.dtype == bool
    assert scores.shape[-1] == c and low.shape[-3:] == (c, 256, 256) and np.isfinite(scores).all()


# -- manifests ------------------------------------------------------------------------------------
def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            yield from _paths(value, prefix + (i,))


manifest_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.sampled_from(
            [
                "../model.xml",
                "/etc/passwd",
                "model.xml",
                "model.onnx",
                "",
                ".",
                "a/../../b.bin",
                "C:\\\\x.xml",
                "model.bin",
                "segedge.json",
            ]
        ),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def manifest_playground(real_folder_640, tmp_path_factory):
    root = tmp_path_factory.mktemp("manifest-fuzz")
    folder = root / "m"
    folder.mkdir()
    for item in real_folder_640.iterdir():
        os.link(item, folder / item.name)  # hard links: inside the folder, no copying
    (folder / MANIFEST_NAME).unlink()
    original = json.loads((real_folder_640 / MANIFEST_NAME).read_text())
    return folder, original, [p for p in _paths(original) if p]


@fuzz_settings(60)
@given(data=st.data())
def test_manifest_mutations(manifest_playground, capsys, data):
    folder, original, paths = manifest_playground
    doc = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            if data.draw(st.booleans()) and isinstance(node, (dict, list)):
                del node[path[-1]]
            else:
                node[path[-1]] = data.draw(manifest_json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this branch
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    model = attempt(FastSam, folder, backend="onnxruntime", verify=False)
    assert model is None or model.num_classes >= 1
    assert main(["info", str(folder), "--no-verify"]) in (0, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1


# -- CLI arguments ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_playground(bus, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-fuzz")
    small = root / "in" / "small.png"
    small.parent.mkdir()
    Image.open(bus).resize((270, 360)).save(small)
    (root / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (root / "plainfile").write_bytes(b"x")
    return root, {p: p.read_bytes() for p in (small, root / "in" / "broken.jpg", root / "plainfile")}


option_text = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "0.5",
            "2",
            "nan",
            "inf",
            "1e309",
            "x",
            "",
            "10,20",
            "-5,10",
            "10,20,0",
            "10,20,7",
            "0,0,100,100",
            "100,100,0,0",
            "1,2,3",
            "1e9,1e9",
            "260,350",
            "269.9,359.9",
        ]
    ),
    st.text(max_size=8),
)


@st.composite
def cli_args(draw, root: Path):
    images = draw(
        st.lists(
            st.sampled_from(["in/small.png", "in/broken.jpg", "in", "missing.jpg", "plainfile"]), min_size=1, max_size=3
        )
    )
    out = draw(
        st.sampled_from(
            ["out", "out/", "o.png", "o.gif", "plainfile", "plainfile/sub", "in/small.png", "o.jpg", "x/y/z"]
        )
    )
    args = ["segment", *[str(root / i) for i in images], "--out", str(root / out)]
    for flag in draw(
        st.lists(
            st.sampled_from(["--point", "--box", "--conf", "--iou", "--max-det", "--threads", "--max-pixels"]),
            max_size=3,
        )
    ):
        args += [flag, draw(option_text)]
    for flag in draw(
        st.lists(
            st.sampled_from(["--everything", "--low-res", "--multimask", "--polygons", "--quiet", "--json"]),
            max_size=2,
            unique=True,
        )
    ):
        args.append(flag)
    return args


@fuzz_settings(40)
@given(data=st.data())
def test_cli_arguments(cli_playground, real_folder_640, capsys, data):
    root, originals = cli_playground
    args = data.draw(cli_args(root)) + ["--model", str(real_folder_640), "--backend", "onnxruntime"]
    try:
        code = main(args)
    except SystemExit as stop:  # argparse: usage errors
        code = stop.code
    assert code in (0, 1, 2), args
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for path, content in originals.items():
        assert path.read_bytes() == content, f"{path} was changed by {args}"
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".segedge-probe")]
    assert not leftovers, leftovers
    for produced in root.rglob("*_segedge.json"):
        json.loads(produced.read_text())  # every result file is whole
    for extra in ("out", "o.png", "o.json", "o.jpg", "x"):
        target = root / extra
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@fuzz_settings(100)
@given(points=prompt_values, labels=prompt_values, boxes=prompt_values, multimask=st.booleans())
def test_sam_batch_prompts(sam_with_image, points, labels, boxes, multimask):
    model, image = sam_with_image
    out = attempt(model.predict_batch, points, labels, boxes, multimask_output=multimask, image=image)
    if out is None:
        return
    c = 3 if multimask else 1
    assert out.low_res.shape[1:] == (c, 256, 256) and out.scores.shape == (len(out.low_res), c)
    assert out.boxes().shape == (len(out.low_res), c, 4)


generator_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.sampled_from([0, 1, 2, 0.5, "coco_rle", "binary_mask"]),
)


@fuzz_settings(100)
@given(data=st.data())
def test_generator_parameters(sam_with_image, data):
    """Any constructor arguments: a generator, or a one-line SegedgeError; a small valid one runs."""
    from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

    model, _ = sam_with_image
    names = [
        "points_per_side",
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
        "output_mode",
    ]
    kwargs = {
        name: data.draw(generator_values)
        for name in data.draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
    }
    gen = attempt(SamAutomaticMaskGenerator, model, **kwargs)
    if gen is None or gen.crop_n_layers > 1 or sum(len(g) for g in gen.point_grids) > 16:
        return  # constructed fine; running big grids is the agreement tests' job
    records = attempt(gen.generate, np.zeros((40, 60, 3), np.uint8))
    assert records is None or isinstance(records, list)


# -- COCO RLE and the server's API ----------------------------------------------------------------------
@fuzz_settings(300)
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_rle_codec_matches_pycocotools(mask):
    """Our compressed RLE string is pycocotools' byte for byte, and decodes back to the mask."""
    from pycocotools import mask as mask_utils

    from segedge.postprocess.encode import rle_decode, rle_encode, string_to_counts
    from segedge.postprocess.masks import RoiMasks

    ours = rle_encode(RoiMasks.from_dense(mask[None]), 0)
    theirs = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(mask.shape)
    assert (rle_decode(ours) == mask).all()
    assert string_to_counts(ours["counts"]).sum() == mask.size


api_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def api_server(sam_tiny_folder, bus):
    pytest.importorskip("fastapi")
    from segedge.serve.app import create_app
    from segedge.serve.client import Client
    from segedge.serve.server import start_in_thread
    from segedge.serve.service import SegmentService

    service = SegmentService.from_folders([sam_tiny_folder], backend="openvino", precision="f32")
    with start_in_thread(create_app(service)) as running:
        client = Client(running.url)
        yield client, client.upload(bus)["image_id"]
        client.close()


@fuzz_settings(150)
@given(data=st.data())
def test_api_requests(api_server, data):
    """Any JSON body to any endpoint: 2xx, or 4xx with a one-line reason; never 5xx, and the server lives on."""
    import json as json_module

    client, image_id = api_server
    path = data.draw(st.sampled_from(["/api/predict", "/api/everything", "/api/encode"]))
    fields = {
        "image_id": st.one_of(st.just(image_id), api_json_values),
        "model": api_json_values,
        "points": api_json_values,
        "labels": api_json_values,
        "box": api_json_values,
        "multimask": api_json_values,
        "text": api_json_values,
        # valid grids stay tiny (a big one is seconds of decoding, not a finding)
        "points_per_side": st.one_of(
            st.integers(1, 3), api_json_values.filter(lambda v: not (isinstance(v, int) and 4 <= v <= 64))
        ),
        "crop_layers": api_json_values,
    }
    body = {k: data.draw(v) for k, v in fields.items() if data.draw(st.booleans())}
    if data.draw(st.booleans()):  # often a valid prompt, so that many requests get past validation
        body.update(image_id=image_id, points=[[data.draw(st.floats(-5, 900)), data.draw(st.floats(-5, 1100))]])
    status, answer = client.request("POST", path, json_module.dumps(body).encode(), "application/json")
    assert status < 500, (status, answer, body)
    if status >= 400:
        assert set(answer) == {"error"} and answer["error"] and "\n" not in answer["error"], answer
