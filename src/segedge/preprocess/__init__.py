"""Image preprocessing as pure NumPy/OpenCV functions (no torch, no backend)."""

from segedge.preprocess.letterbox import Letterbox, letterbox, letterbox_params, to_nchw_float

__all__ = ["Letterbox", "letterbox", "letterbox_params", "to_nchw_float"]
