"""segedge: SAM, SAM 2, MobileSAM and FastSAM exported to static ONNX / OpenVINO IR, run with NumPy.

Importing this package never imports torch. The heavy pieces load on first use:

>>> import segedge
>>> model = segedge.FastSam("models/fastsam")          # doctest: +SKIP
>>> result = model.segment("photo.jpg")                # doctest: +SKIP
"""

from __future__ import annotations

from segedge._version import __version__

__all__ = [
    "Clip",
    "FastSam",
    "Sam",
    "Sam2",
    "Sam2AutomaticMaskGenerator",
    "Sam2Video",
    "Sam3",
    "SamAutomaticMaskGenerator",
    "SegedgeError",
    "Yolo",
    "Yoloe",
    "__version__",
    "load_model_folder",
    "open_model",
    "read_image",
]


# Public names, imported on first use: `import segedge` stays cheap and free of any backend import.
_LAZY = {
    "FastSam": "segedge.runtime.fastsam",
    "Yolo": "segedge.runtime.yolo",
    "Yoloe": "segedge.runtime.yoloe",
    "Clip": "segedge.runtime.clip",
    "Sam": "segedge.runtime.sam",
    "Sam2": "segedge.runtime.sam2",
    "Sam2Video": "segedge.runtime.sam2_video",
    "Sam3": "segedge.runtime.sam3",
    "SamAutomaticMaskGenerator": "segedge.runtime.sam_generator",
    "Sam2AutomaticMaskGenerator": "segedge.runtime.sam_generator",  # one class serves both families
    "open_model": "segedge.runtime.model_base",
    "load_model_folder": "segedge.manifest",
    "read_image": "segedge.imageio",
    "SegedgeError": "segedge.errors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'segedge' has no attribute {name!r}")
    from importlib import import_module

    attribute = "SamAutomaticMaskGenerator" if name == "Sam2AutomaticMaskGenerator" else name
    return getattr(import_module(module), attribute)
