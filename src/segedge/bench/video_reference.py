"""sam2's own ``SAM2VideoPredictor``, made to run on a CPU: the reference segedge's tracker is measured against
(needs the export extra and the sam2 package).

As published it cannot run on a CPU: it stores each frame's memory as bf16 and later feeds it to f32 layers
("mat1 and mat2 must have the same dtype, but got BFloat16 and Float"; on a GPU autocast hides this). Here the
stored memory keeps its bf16-rounded values as float32, which is what a GPU run attends to; everything else is
sam2's, built by its ``build_sam2_video_predictor`` with its post-processing settings and loaded by its strict
checkpoint loader.

Small-hole filling (sam2's ``fill_hole_area``, 8 in its build) needs sam2's CUDA extension (sam2 skips it with a
warning without one). ``fill_hole_area=0`` turns it off (what the tests compare against, with segedge's filling off
too: segedge's filling is tested on its own against OpenCV); with it on, :func:`cpu_connected_components` (scipy,
8-connected, as the extension) stands in while the predictor runs a frame, and sam2 is left as it was after.
"""

from __future__ import annotations

import os

import numpy as np

SAM2_FILL_HOLE_AREA = 8  # build_sam2_video_predictor's ``++model.fill_hole_area=8``


def sam2_video_predictor(
    checkpoint: str | os.PathLike,
    threads: int | None = None,
    config: str | None = None,
    fill_hole_area: int = SAM2_FILL_HOLE_AREA,
    image_size: int = 1024,
):
    """The CPU ``SAM2VideoPredictor`` for a SAM 2 / 2.1 checkpoint, loaded strictly by sam2. ``config``: sam2's config
    file (``configs/sam2.1/sam2.1_hiera_t.yaml`` ...; default: recognised from the weights' shapes by segedge);
    ``fill_hole_area``: the largest hole filled, in low-res (256x256) mask pixels, 0 for none; ``image_size``: the
    square the model runs at (1024, SAM 2's own; another for a folder exported with ``--imgsz``)."""
    import torch
    from sam2 import sam2_video_predictor as official
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.utils import misc

    class CpuSam2VideoPredictor(official.SAM2VideoPredictor):
        def _run_single_frame_inference(self, *args, **kwargs):
            cuda_components = misc.get_connected_components
            misc.get_connected_components = cpu_connected_components
            try:
                out, masks = super()._run_single_frame_inference(*args, **kwargs)
            finally:
                misc.get_connected_components = cuda_components
            if out["maskmem_features"] is not None:
                out["maskmem_features"] = out["maskmem_features"].float()
            return out, masks

        def _run_memory_encoder(self, *args, **kwargs):
            features, pos = super()._run_memory_encoder(*args, **kwargs)
            return features.float(), pos

    if config is None:
        from segedge.export.sam2_arch import infer_arch, load_state_dict

        config = infer_arch(load_state_dict(checkpoint)).config
    torch.set_num_threads(threads or os.cpu_count() or 1)
    from segedge.export.sam2_arch import size_overrides

    predictor = build_sam2_video_predictor(
        config, str(checkpoint), device="cpu", hydra_overrides_extra=size_overrides(image_size)
    )
    predictor.__class__ = CpuSam2VideoPredictor
    predictor.fill_hole_area = int(fill_hole_area)  # what sam2 reads before each frame's filling
    torch.set_grad_enabled(False)
    return predictor


def cpu_connected_components(mask):
    """sam2's ``get_connected_components`` (CUDA) on the CPU: ``(labels, areas)`` per pixel of ``mask (N, 1, H, W)``,
    8-connected components of its nonzero pixels (label 0 and area 0 elsewhere), by scipy.ndimage."""
    import scipy.ndimage as ndi
    import torch

    m = mask.cpu().numpy().astype(bool)
    labels = np.zeros(m.shape, np.int32)
    areas = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, _ = ndi.label(m[i, 0], structure=np.ones((3, 3), bool))
        counts = np.bincount(lab.ravel())
        labels[i, 0] = lab
        areas[i, 0] = np.where(lab > 0, counts[lab], 0)
    return torch.from_numpy(labels), torch.from_numpy(areas)


def pan_clip(folder, photo, frames: int = 30, size=(480, 640), step: int = 20):
    """A real clip for tracking: ``frames`` JPEG frames (SAM 2's folder format, ``00000.jpg`` ...) of a ``size``
    (H, W) window panning right across ``photo`` by ``step`` pixels a frame (what is at the left edge leaves
    the picture). Returns the folder."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(photo).convert("RGB")
    h, w = size
    if image.width < w + (frames - 1) * step or image.height < h:
        raise ValueError(f"{photo} is too small for {frames} frames of {w}x{h} moving {step} pixels")
    top = (image.height - h) // 2
    for i in range(frames):
        image.crop((i * step, top, i * step + w, top + h)).save(folder / f"{i:05d}.jpg", quality=95)
    return folder
