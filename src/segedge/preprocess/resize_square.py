"""SAM 2 preprocessing: SAM2Transforms in NumPy + Pillow.

The reference (``sam2.utils.transforms.SAM2Transforms``): ``ToTensor`` (uint8 RGB -> float32 in [0, 1]),
``Resize((1024, 1024))`` on the tensor (aspect ratio *not* kept; bilinear with antialiasing, which
torchvision turns on for tensors), ``Normalize(mean, std)`` with ImageNet's mean and std.

PyTorch's antialiased bilinear filter is Pillow's bilinear filter (triangle weights over
``max(scale, 1)`` input pixels around each output centre, normalised), so each channel is resized as
a 32-bit float Pillow image (mode "F", computed in double precision): within 3e-7 of PyTorch's
float32 result, in 25 ms for a 2250x1500 photo where a NumPy gather took 110 ms.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_antialias(planes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``(C, H, W)`` float32 -> ``(C, h, w)`` float32, antialiased bilinear (PyTorch's ``antialias=True``)."""
    from PIL import Image

    h, w = out_hw
    return np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(p, dtype=np.float32), mode="F").resize((w, h), Image.BILINEAR)
            )
            for p in planes
        ]
    )


def sam2_preprocess(image: np.ndarray, size: int = 1024, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """``HxWx3 uint8`` RGB -> ``(1, 3, size, size)`` float32 (SAM2Transforms)."""
    planes = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    if image.shape[:2] != (size, size):
        planes = resize_antialias(planes, (size, size))
    return _normalize(planes, mean, std)


def sam2_video_preprocess(image: np.ndarray, size: int = 1024, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """``HxWx3 uint8`` RGB -> ``(1, 3, size, size)`` float32 as SAM 2's video predictor loads a frame
    (``sam2.utils.misc._load_img_as_tensor``): Pillow's default (bicubic) resize of the uint8 image to the
    square, then /255 and the mean and std, as for images."""
    from segedge.preprocess.pillow_resize import pil_resize

    square = pil_resize(image, (size, size), "bicubic") if image.shape[:2] != (size, size) else image
    return _normalize(square.transpose(2, 0, 1).astype(np.float32) / np.float32(255), mean, std)


def _normalize(planes: np.ndarray, mean, std) -> np.ndarray:
    """``(3, H, W)`` float32 in [0, 1] -> ``(1, 3, H, W)`` float32 ``(x - mean) / std``."""
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray(((planes - m) / s)[None], dtype=np.float32)
