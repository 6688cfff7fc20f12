"""Labelled instance-segmentation data for ``segedge val``: ultralytics' YOLO format or COCO's JSON.

Both readers return :class:`Dataset`: a list of :class:`Sample` (an image path and its instances),
the dataset's class names and where it came from. Instances carry their class id and either polygons
(``(K, 2)`` float32 xy in **original-image pixels**) or a full-resolution boolean mask (COCO RLE),
never both; :func:`instance_mask` rasterises either at the original size. Pure Python + NumPy +
OpenCV: no torch, no ultralytics, no pycocotools.

- ultralytics (``data.yaml`` with ``names`` and ``val``/``train`` image folders; labels in the
  sibling ``labels/`` folder, one instance a line: class id, then polygon x y pairs normalised to
  0-1). Box-only lines (5 numbers) are refused: ``val`` measures masks.
- COCO (``instances.json``, images beside it or in ``images/``): polygons and RLE (compressed or not);
  ``iscrowd`` annotations are left out, as ultralytics' COCO converter does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segedge.errors import SegedgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Instance:
    """One labelled object: ``class_id`` (an index into :attr:`Dataset.names`), and ``polygons`` (list of
    ``(K, 2)`` float32 xy original pixels) or ``mask`` (``(H, W)`` bool at the original size)."""

    class_id: int
    polygons: list[np.ndarray] = field(default_factory=list)
    mask: np.ndarray | None = None


@dataclass
class Sample:
    """An image (``path``; ``hw`` original (height, width) pixels, when known before reading) and its instances."""

    path: Path
    instances: list[Instance]
    hw: tuple[int, int] | None = None


@dataclass
class Dataset:
    """``samples``, ``names`` (class id -> name), ``kind`` ("ultralytics" or "coco") and ``source`` (the file read)."""

    samples: list[Sample]
    names: list[str]
    kind: str
    source: Path

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.samples)


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read ``path``: an ultralytics ``data.yaml`` (or a folder holding one), or a COCO instances ``.json``
    (or a folder holding ``instances*.json`` / ``annotations/instances*.json``). Raises :class:`SegedgeError`
    saying what was expected."""
    p = Path(path)
    if p.is_dir():
        found = [
            p / "data.yaml",
            p / "data.yml",
            *sorted(p.glob("instances*.json")),
            *sorted(p.glob("annotations/instances*.json")),
        ]
        found = [f for f in found if f.is_file()]
        if not found:
            raise SegedgeError(
                f"{p}: no data.yaml (ultralytics) or instances*.json (COCO) in this folder; pass one of them with --data"
            )
        p = found[0]
    if not p.is_file():
        raise SegedgeError(
            f"{p}: no such dataset file; --data takes an ultralytics data.yaml or a COCO instances .json"
        )
    if p.suffix.lower() in (".yaml", ".yml"):
        data = read_ultralytics(p)
    elif p.suffix.lower() == ".json":
        data = read_coco(p)
    else:
        raise SegedgeError(
            f"{p}: --data takes an ultralytics data.yaml or a COCO instances .json, not a {p.suffix or 'suffix-less'} file"
        )
    if not data.samples:
        raise SegedgeError(f"{data.source}: no labelled images found")
    return data


# -- ultralytics -----------------------------------------------------------------------------------
def read_ultralytics(yaml_path: Path) -> Dataset:
    """An ultralytics dataset: the ``val`` split (else ``test``, else ``train``) of ``yaml_path``."""
    doc = _read_yaml(yaml_path)
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            names = [str(names[k]) for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise SegedgeError(f"{yaml_path}: 'names' must map class ids 0, 1, ... to names") from None
    if not isinstance(names, list) or not names:
        raise SegedgeError(f"{yaml_path}: no class 'names' (a list, or a mapping from class id to name)")
    root = yaml_path.parent
    if doc.get("path"):  # relative to the yaml's folder
        root = root / Path(str(doc["path"]))
    split = next((doc[k] for k in ("val", "test", "train") if doc.get(k)), None)
    if split is None:
        raise SegedgeError(f"{yaml_path}: no 'val' (or 'test' / 'train') image folder")
    images = []
    for entry in split if isinstance(split, list) else [split]:
        folder = root / str(entry)
        if folder.is_file() and folder.suffix == ".txt":  # a list of image paths
            images += [(folder.parent / line.strip()) for line in folder.read_text().splitlines() if line.strip()]
        elif folder.is_dir():
            images += sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise SegedgeError(f"{yaml_path}: image folder {folder} does not exist")
    samples = [Sample(im, _read_yolo_labels(_label_path(im), len(names))) for im in images]
    return Dataset(samples, [str(n) for n in names], "ultralytics", yaml_path)


def _label_path(image: Path) -> Path:
    """ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_yolo_labels(path: Path, num_classes: int) -> list[Instance]:
    """Instances of one YOLO-segmentation label file (absent file = no objects); polygons stay normalised
    (0-1) until :func:`polygons_in_pixels` knows the image's size."""
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            cls, coords = int(values[0]), np.asarray(values[1:], dtype=np.float32)
        except ValueError:
            raise SegedgeError(f"{path}:{n}: expected a class id and polygon x y pairs, got {line[:60]!r}") from None
        if not 0 <= cls < num_classes:
            raise SegedgeError(f"{path}:{n}: class {cls} is not in the dataset's {num_classes} names")
        if len(coords) < 6 or len(coords) % 2:
            raise SegedgeError(
                f"{path}:{n}: a segmentation label needs at least 3 polygon points (x y pairs); "
                "box-only labels cannot measure masks"
            )
        out.append(Instance(cls, [coords.reshape(-1, 2)]))
    return _unique(out)


def _unique(instances: list[Instance]) -> list[Instance]:
    """Drop exact duplicate lines (ultralytics does the same when it checks a label file)."""
    seen, out = set(), []
    for inst in instances:
        key = (inst.class_id, inst.polygons[0].tobytes())
        if key not in seen:
            seen.add(key)
            out.append(inst)
    return out


def _read_yaml(path: Path) -> dict:
    """PyYAML when installed (it comes with ultralytics), else a reader for the flat subset data files use:
    ``key: value`` lines and a ``names:`` block of ``id: name`` or ``- name`` lines, or an inline ``[a, b]`` list."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        return _read_simple_yaml(text, path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SegedgeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise SegedgeError(f"{path}: expected a mapping with 'names' and 'val'")
    return doc


def _scalar(text: str):
    text = text.split(" #")[0].strip().strip("'\"")
    return int(text) if text.lstrip("-").isdigit() else text


def _read_simple_yaml(text: str, path: Path) -> dict:
    doc: dict = {}
    block = None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t" and block is not None:
            item = raw.strip()
            if item.startswith("- "):
                doc[block] = (doc[block] if isinstance(doc[block], list) else []) + [_scalar(item[2:])]
            elif ":" in item:
                k, v = item.split(":", 1)
                doc[block] = (doc[block] if isinstance(doc[block], dict) else {}) | {_scalar(k): _scalar(v)}
            continue
        if ":" not in raw:
            raise SegedgeError(f"{path}: cannot read line {raw[:60]!r} (install PyYAML for full YAML)")
        key, value = (s.strip() for s in raw.split(":", 1))
        value = value.split(" #")[0].strip()
        if value.startswith("[") and value.endswith("]"):
            doc[key] = [_scalar(v) for v in value[1:-1].split(",") if v.strip()]
            block = None
        elif value:
            doc[key], block = _scalar(value), None
        else:
            doc[key], block = None, key
    return doc


# -- COCO ------------------------------------------------------------------------------------------
def read_coco(json_path: Path) -> Dataset:
    """A COCO instances file; images are looked up beside it, then in ``images/`` and ``../images/``."""
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        categories = sorted(doc["categories"], key=lambda c: c["id"])
        images, annotations = doc["images"], doc.get("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise SegedgeError(f"{json_path}: not a COCO instances file ({type(exc).__name__}: {exc})") from None
    names = [str(c["name"]) for c in categories]
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict = {im["id"]: [] for im in images}
    for ann in annotations:
        if ann.get("iscrowd", 0) or ann.get("image_id") not in per_image or ann.get("category_id") not in index:
            continue
        per_image[ann["image_id"]].append(ann)
    samples = []
    for im in images:
        path = _find_image(json_path.parent, im["file_name"])
        hw = (int(im["height"]), int(im["width"]))
        insts = [
            inst
            for ann in per_image[im["id"]]
            if (inst := _coco_instance(ann, index[ann["category_id"]], hw)) is not None
        ]
        samples.append(Sample(path, insts, hw))
    return Dataset(samples, names, "coco", json_path)


def _find_image(root: Path, name: str) -> Path:
    for folder in (root, root / "images", root.parent / "images"):
        if (folder / name).is_file():
            return folder / name
    raise SegedgeError(f"image {name} of {root} not found beside the JSON file or in an images/ folder")


def _coco_instance(ann: dict, class_id: int, hw: tuple[int, int]) -> Instance | None:
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        polys = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in seg if len(p) >= 6]
        return Instance(class_id, polys) if polys else None
    if isinstance(seg, dict) and "counts" in seg:
        from segedge.postprocess.encode import rle_decode

        try:
            mask = rle_decode(seg)  # compressed (a string) or uncompressed (a list of runs)
        except (ValueError, TypeError, KeyError):
            raise SegedgeError(
                f"annotation {ann.get('id')}: its RLE does not decode to a {seg.get('size')} mask"
            ) from None
        return Instance(class_id, mask=np.asarray(mask, bool)) if mask.any() else None
    return None


# -- masks -----------------------------------------------------------------------------------------
def polygons_in_pixels(sample: Sample, hw: tuple[int, int]) -> list[Instance]:
    """``sample``'s instances with polygons in original pixels: ultralytics labels are stored normalised
    to 0-1 and scaled here by the image's ``hw``; COCO polygons are already pixels."""
    if sample.hw is not None:
        return sample.instances
    h, w = hw
    return [Instance(i.class_id, [p * np.float32([w, h]) for p in i.polygons], i.mask) for i in sample.instances]


def instance_mask(inst: Instance, hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask of ``inst`` (polygons in original pixels) at the original size: polygons filled
    with OpenCV at rounded vertices (even-odd over several parts is not used; parts are unioned)."""
    if inst.mask is not None:
        return inst.mask
    mask = np.zeros(hw, np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in inst.polygons], 1)
    return mask.astype(bool)


def polygon_box(inst: Instance) -> np.ndarray:
    """``(4,)`` xyxy box around the instance (polygon extremes, or the mask's pixel extent, end exclusive)."""
    if inst.mask is not None:
        ys, xs = np.nonzero(inst.mask)
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    pts = np.concatenate(inst.polygons)
    return np.array([*pts.min(0), *pts.max(0)], np.float32)
