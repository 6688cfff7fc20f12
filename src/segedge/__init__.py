"""segedge: SAM, SAM 2, MobileSAM and FastSAM exported to static ONNX / OpenVINO IR, run with NumPy.

Importing this package never imports torch. The heavy pieces load on first use:

>>> import segedge
>>> model = segedge.FastSam("models/fastsam")          # doctest: +SKIP
>>> result = model.segment("photo.jpg")                # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Clip", "FastSam", "Sam", "Sam2", "Sam2AutomaticMaskGenerator", "SamAutomaticMaskGenerator", "SegedgeError", "__version__", "load_model_folder", "read_image"]


def __getattr__(name: str):
    # Lazy attributes keep `import segedge` cheap and free of any backend import.
    if name == "FastSam":
        from segedge.runtime.fastsam import FastSam

        return FastSam
    if name == "Clip":
        from segedge.runtime.clip import Clip

        return Clip
    if name == "Sam":
        from segedge.runtime.sam import Sam

        return Sam
    if name == "Sam2":
        from segedge.runtime.sam2 import Sam2

        return Sam2
    if name in ("SamAutomaticMaskGenerator", "Sam2AutomaticMaskGenerator"):  # one class serves both families
        from segedge.runtime.sam_generator import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator
    if name == "load_model_folder":
        from segedge.manifest import load_model_folder

        return load_model_folder
    if name == "read_image":
        from segedge.imageio import read_image

        return read_image
    if name == "SegedgeError":
        from segedge.errors import SegedgeError

        return SegedgeError
    raise AttributeError(f"module 'segedge' has no attribute {name!r}")
