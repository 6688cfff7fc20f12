"""The supported models: names, official checkpoint URLs and sha256, input sizes.

``sha256`` is None where the publisher gives no checksum and none could be confirmed; such
downloads are reported as unverified (the hash that was received is recorded in the model folder's
manifest, so a later export can be compared with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from segedge.errors import SegedgeError


@dataclass(frozen=True)
class ModelSpec:
    """One official checkpoint. ``input_size`` is the model's square input side in pixels."""

    name: str
    family: str  # the export command: "sam" | "mobile-sam" | "efficientvit-sam" | "hq-sam" | "sam2" | "fastsam" | "yolo" | ...
    filename: str
    url: str
    sha256: str | None
    input_size: int
    description: str


_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"
_ULTRALYTICS = "https://github.com/ultralytics/assets/releases/download/v8.4.0/"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/"
# SAM 2 checkpoints: Meta publishes no checksums for them (sha256 None: reported as unverified).
_SAM2_SIZES = {"tiny": "156 MB", "small": "185 MB", "base_plus": "323 MB", "large": "898 MB"}
# EfficientViT-SAM (MIT HAN Lab, Hugging Face mit-han-lab/efficientvit-sam): no checksums are published beside
# the links in its README, so sha256 is None (reported as unverified). Encoder input size per variant.
_EVIT_SAM = "https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/"
_EVIT_SAM_SIZES = {"l0": 512, "l1": 512, "l2": 512, "xl0": 1024, "xl1": 1024}
# HQ-SAM (SysCV, Hugging Face lkeab/hq-sam, the links in its README): no checksums published (sha256 None).
_HQ_SAM = "https://huggingface.co/lkeab/hq-sam/resolve/main/"
# ultralytics' YOLO segmentation checkpoints (release assets, no published checksums: sha256 None), per generation
_YOLO_SEG = {"yolo26": "YOLO26", "yolo11": "YOLO11"}
# YOLOE segmentation checkpoints (open vocabulary): YOLOE-v8 and YOLOE-11 s/m/l from the v8.3.0 assets, YOLOE-26 n-x
# from v8.4.0; their text encoders (mobileclip_blt.ts / mobileclip2_b.ts) are fetched by ultralytics at export
_YOLOE_SEG = {
    "yoloe-v8": ("https://github.com/ultralytics/assets/releases/download/v8.3.0/", "sml"),
    "yoloe-11": ("https://github.com/ultralytics/assets/releases/download/v8.3.0/", "sml"),
    "yoloe-26": (_ULTRALYTICS, "nsmlx"),
}
_HQ_SAM_SIZES = {
    "vit_b": "ViT-B (379 MB)",
    "vit_l": "ViT-L (1.2 GB)",
    "vit_h": "ViT-H (2.6 GB)",
    "vit_tiny": "Light HQ-SAM, MobileSAM's TinyViT (41 MB)",
}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "sam_vit_b",
            "sam",
            "sam_vit_b_01ec64.pth",
            _SAM + "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            1024,
            "SAM ViT-B (375 MB)",
        ),
        ModelSpec(
            "sam_vit_l",
            "sam",
            "sam_vit_l_0b3195.pth",
            _SAM + "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            1024,
            "SAM ViT-L (1.2 GB)",
        ),
        ModelSpec(
            "sam_vit_h",
            "sam",
            "sam_vit_h_4b8939.pth",
            _SAM + "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            1024,
            "SAM ViT-H (2.4 GB)",
        ),
        ModelSpec(
            "mobile_sam",
            "mobile-sam",
            "mobile_sam.pt",
            _ULTRALYTICS + "mobile_sam.pt",
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            1024,
            "MobileSAM, TinyViT encoder (39 MB)",
        ),
        *(
            ModelSpec(
                f"efficientvit_sam_{v}",
                "efficientvit-sam",
                f"efficientvit_sam_{v}.pt",
                f"{_EVIT_SAM}efficientvit_sam_{v}.pt",
                None,
                size,
                f"EfficientViT-SAM {v.upper()}, EfficientViT encoder at {size} px",
            )
            for v, size in _EVIT_SAM_SIZES.items()
        ),
        *(
            ModelSpec(
                f"sam_hq_{v}", "hq-sam", f"sam_hq_{v}.pth", f"{_HQ_SAM}sam_hq_{v}.pth", None, 1024, f"HQ-SAM {what}"
            )
            for v, what in _HQ_SAM_SIZES.items()
        ),
        ModelSpec(
            "FastSAM-s",
            "fastsam",
            "FastSAM-s.pt",
            _ULTRALYTICS + "FastSAM-s.pt",
            None,
            1024,
            "FastSAM small, YOLOv8s-seg with one class (23 MB)",
        ),
        ModelSpec(
            "FastSAM-x",
            "fastsam",
            "FastSAM-x.pt",
            _ULTRALYTICS + "FastSAM-x.pt",
            None,
            1024,
            "FastSAM large, YOLOv8x-seg with one class (138 MB)",
        ),
        *(
            ModelSpec(
                f"{gen}{size}-seg", "yolo", f"{gen}{size}-seg.pt", f"{_ULTRALYTICS}{gen}{size}-seg.pt", None, 640, what
            )
            for gen, title in _YOLO_SEG.items()
            for size in "nsmlx"
            for what in (f"{title}-seg {size} (80 COCO classes)",)
        ),
        *(
            ModelSpec(f"{gen}{size}-seg", "yoloe", f"{gen}{size}-seg.pt", f"{base}{gen}{size}-seg.pt", None, 640, what)
            for gen, (base, sizes) in _YOLOE_SEG.items()
            for size in sizes
            for what in (f"{gen.upper().replace('-V8', '-v8')}-seg {size}, open vocabulary (text and visual prompts)",)
        ),
        *(
            ModelSpec(
                f"{gen}{size}-seg-pf",
                "yoloe",
                f"{gen}{size}-seg-pf.pt",
                f"{base}{gen}{size}-seg-pf.pt",
                None,
                640,
                what,
            )
            for gen, (base, sizes) in _YOLOE_SEG.items()
            for size in sizes
            for what in (f"{gen.upper().replace('-V8', '-v8')}-seg {size} prompt-free (its own 4585-name vocabulary)",)
        ),
        *(
            ModelSpec(
                f"sam2.1_hiera_{v}",
                "sam2",
                f"sam2.1_hiera_{v}.pt",
                f"{_SAM2}092824/sam2.1_hiera_{v}.pt",
                None,
                1024,
                f"SAM 2.1 Hiera-{v} ({size})",
            )
            for v, size in _SAM2_SIZES.items()
        ),
        *(
            ModelSpec(
                f"sam2_hiera_{v}",
                "sam2",
                f"sam2_hiera_{v}.pt",
                f"{_SAM2}072824/sam2_hiera_{v}.pt",
                None,
                1024,
                f"SAM 2.0 Hiera-{v} ({size})",
            )
            for v, size in _SAM2_SIZES.items()
        ),
        ModelSpec(
            "edgetam",
            "edgetam",
            "edgetam.pt",
            "https://huggingface.co/facebook/EdgeTAM/resolve/main/edgetam.pt",
            None,
            1024,
            "EdgeTAM, SAM 2.1 with a RepViT-M1 encoder and a spatial perceiver (facebookresearch/EdgeTAM)",
        ),
        ModelSpec(
            "clip_vit_b_32",
            "clip",
            "ViT-B-32.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            224,
            "OpenAI CLIP ViT-B/32, used by FastSAM text prompts (338 MB)",
        ),
    )
}


@dataclass(frozen=True)
class DatasetSpec:
    """A public image set segedge can download, e.g. to calibrate int8. ``images`` is the folder of
    images inside the archive; ``count`` how many it holds."""

    name: str
    url: str
    sha256: str | None
    images: str
    count: int
    description: str


# Calibration images when `segedge quantize` is given none: ultralytics' coco128 (the first 128 images
# of COCO train2017: people, vehicles, animals, food, rooms, streets), the set ultralytics' own int8
# exports calibrate on. NNCF recommends ~300 samples; 128 photos give 102 to calibrate and 26 held out
# for the gate, and the SAM decoders see 6 prompt sets per image (~600 samples). Your own images, of
# what the model will see in the field, are better: pass --calibration.
DATASETS: dict[str, DatasetSpec] = {
    "coco128": DatasetSpec(
        "coco128",
        "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip",
        None,
        "coco128/images/train2017",
        128,
        "128 COCO train2017 photos from ultralytics (7 MB)",
    ),
}
DEFAULT_CALIBRATION = "coco128"

# Names users type for the same thing.
ALIASES = {
    "fastsam-s": "FastSAM-s",
    "fastsam_s": "FastSAM-s",
    "fastsam-s.pt": "FastSAM-s",
    "fastsam-x": "FastSAM-x",
    "fastsam_x": "FastSAM-x",
    "fastsam-x.pt": "FastSAM-x",
    **{f"{gen}{size}-seg.pt": f"{gen}{size}-seg" for gen in _YOLO_SEG for size in "nsmlx"},
    **{f"{gen}{size}-seg.pt": f"{gen}{size}-seg" for gen, (_, sizes) in _YOLOE_SEG.items() for size in sizes},
    **{f"{gen}{size}-seg-pf.pt": f"{gen}{size}-seg-pf" for gen, (_, sizes) in _YOLOE_SEG.items() for size in sizes},
    "mobile-sam": "mobile_sam",
    "mobilesam": "mobile_sam",
    "mobile_sam.pt": "mobile_sam",
    "vit_b": "sam_vit_b",
    "vit_l": "sam_vit_l",
    "vit_h": "sam_vit_h",
    "sam_vit_b_01ec64.pth": "sam_vit_b",
    "sam_vit_l_0b3195.pth": "sam_vit_l",
    "sam_vit_h_4b8939.pth": "sam_vit_h",
    **{f"sam2.1_hiera_{v}.pt": f"sam2.1_hiera_{v}" for v in _SAM2_SIZES},
    **{f"sam2_hiera_{v}.pt": f"sam2_hiera_{v}" for v in _SAM2_SIZES},
    "sam2.1_t": "sam2.1_hiera_tiny",
    "edgetam.pt": "edgetam",
    "sam2.1_s": "sam2.1_hiera_small",
    "sam2.1_b": "sam2.1_hiera_base_plus",
    "sam2.1_l": "sam2.1_hiera_large",
    **{f"efficientvit-sam-{v}": f"efficientvit_sam_{v}" for v in _EVIT_SAM_SIZES},
    **{f"efficientvit_sam_{v}.pt": f"efficientvit_sam_{v}" for v in _EVIT_SAM_SIZES},
    **{f"sam_hq_{v}.pth": f"sam_hq_{v}" for v in _HQ_SAM_SIZES},
    **{f"hq_sam_{v}": f"sam_hq_{v}" for v in _HQ_SAM_SIZES},
    **{f"hq-sam-{v.replace('_', '-')}": f"sam_hq_{v}" for v in _HQ_SAM_SIZES},
    "vit-b-32": "clip_vit_b_32",
    "vit-b/32": "clip_vit_b_32",
    "vit-b-32.pt": "clip_vit_b_32",
}


def lookup(name: str) -> ModelSpec | None:
    """The spec for a model name, alias or official file name (case-insensitive), or None."""
    if name in MODELS:
        return MODELS[name]
    key = name.lower()
    for spec_name in MODELS:
        if spec_name.lower() == key:
            return MODELS[spec_name]
    return MODELS.get(ALIASES.get(key, ""))


def get(name: str) -> ModelSpec:
    """Like :func:`lookup` but raises a :class:`SegedgeError` listing the known names."""
    spec = lookup(name)
    if spec is None:
        raise SegedgeError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return spec
