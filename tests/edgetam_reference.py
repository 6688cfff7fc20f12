"""EdgeTAM's official predictor, for tests/test_edgetam.py and benchmarks/edgetam_tracking.py.

Runs in the EdgeTAM venv (``scripts/test.sh`` makes ``.venv-edgetam``: ``edgetam-dimos`` 1.0.1, which installs under
the import name ``sam2`` and so cannot share a venv with the real ``sam2``; torch and timm come from the test venv):

    .venv-edgetam/bin/python tests/edgetam_reference.py seed OUT.pt [--seed 0] [--obj-score-bias 10]
    .venv-edgetam/bin/python tests/edgetam_reference.py track CKPT FRAMES_DIR EVENTS_JSON OUT_NPZ [--fill-hole-area N]

``seed``: EdgeTAM built by the package's own ``build_sam2("configs/edgetam.yaml", ckpt_path=None)`` after
``torch.manual_seed``, saved as ``{"model": state dict}`` (the official format). Random weights predict "no object"
on every frame (the object-score head's output is negative, and SAM 2 then sets every mask logit to -1024), so
``--obj-score-bias`` is added to that head's last bias: the masks are then the decoder's own.

``track``: ``build_sam2_video_predictor("configs/edgetam.yaml", CKPT, device="cpu")`` on a folder of JPEG frames,
then the EVENTS_JSON list of ``[verb, kwargs]``: ``add_new_points_or_box`` (SAM2VideoPredictor's keywords) or
``propagate`` (``propagate_in_video``'s). OUT_NPZ holds, for each step, frame and object, the mask logits at video
size as ``"{step}_{frame}_{obj}"`` (float32 (H, W)) and ``seconds_{step}`` (the step's wall time).

Three patches, at run time (no file of the package is edited):

1. ``TimmBackbone`` calls timm's ``create_model(..., pretrained=True)`` (imported by name into
   ``sam2.modeling.backbones.timm``), which downloads RepViT's ImageNet weights: rebound to ``pretrained=False``
   (the checkpoint holds every weight).
2. ``PerceiverResampler.forward_2d`` views an expanded tensor, which fails for more than one object
   (facebookresearch/EdgeTAM#15): the same code with ``reshape``.
3. The predictor stores each frame's memory as bf16 and a later pass over tracked frames feeds it to a float32
   projection ("expected m1 and m2 to have the same dtype"; a GPU's autocast hides it): the stored memory keeps its
   bf16-rounded values as float32, what a GPU run attends to (segedge.bench.video_reference does the same for sam2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CONFIG = "configs/edgetam.yaml"


def _patch() -> None:
    import sam2.modeling.backbones.timm as timm_backbone
    import sam2.modeling.perceiver as perceiver

    create = timm_backbone.create_model
    if not getattr(create, "no_download", False):

        def without_download(*args, **kwargs):
            return create(*args, **{**kwargs, "pretrained": False})

        without_download.no_download = True
        timm_backbone.create_model = without_download

    def forward_2d(self, x):  # the package's forward_2d, .view -> .reshape on the first line
        b, c, h, _ = x.shape
        latents_2d = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
        num_window = int(math.sqrt(self.num_latents_2d))
        x = perceiver.window_partition(x.permute(0, 2, 3, 1), h // num_window).flatten(1, 2)
        for layer in self.layers:
            latents_2d = layer(latents_2d, x)
        latents_2d = latents_2d.view(b, num_window, num_window, c).permute(0, 3, 1, 2)
        pos_2d = self.position_encoding(latents_2d).permute(0, 2, 3, 1).flatten(1, 2)
        return self.norm(latents_2d.permute(0, 2, 3, 1).flatten(1, 2)), pos_2d

    perceiver.PerceiverResampler.forward_2d = forward_2d

    from sam2.sam2_video_predictor import SAM2VideoPredictor

    if not getattr(SAM2VideoPredictor, "float_memory", False):
        single, encode = SAM2VideoPredictor._run_single_frame_inference, SAM2VideoPredictor._run_memory_encoder

        def run_single_frame(self, *args, **kwargs):
            out, masks = single(self, *args, **kwargs)
            if out["maskmem_features"] is not None:
                out["maskmem_features"] = out["maskmem_features"].float()
            return out, masks

        def run_memory_encoder(self, *args, **kwargs):
            features, pos = encode(self, *args, **kwargs)
            return features.float(), pos

        SAM2VideoPredictor._run_single_frame_inference = run_single_frame
        SAM2VideoPredictor._run_memory_encoder = run_memory_encoder
        SAM2VideoPredictor.float_memory = True


def seed(out: str, seed_value: int, obj_score_bias: float) -> None:
    _patch()
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed_value)
    model = build_sam2(CONFIG, ckpt_path=None, device="cpu")
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += obj_score_bias
    state = model.state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise SystemExit(f"non-finite tensors in the seeded model: {bad[:3]}")
    torch.save({"model": state}, out)


def track(checkpoint: str, frames: str, events_json: str, out: str, fill_hole_area: int | None) -> None:
    _patch()
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(CONFIG, checkpoint, device="cpu")
    if fill_hole_area is not None:  # build_sam2_video_predictor's own override (8) comes after the caller's
        predictor.fill_hole_area = fill_hole_area
    results: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        state = predictor.init_state(video_path=frames)
        for step, (verb, kwargs) in enumerate(json.load(open(events_json))):
            t0 = time.perf_counter()
            if verb == "propagate":
                outputs = list(predictor.propagate_in_video(state, **kwargs))
            else:
                outputs = [getattr(predictor, verb)(state, **kwargs)]
            results[f"seconds_{step}"] = np.array(time.perf_counter() - t0)
            for frame, ids, logits in outputs:
                for i, obj in enumerate(ids):
                    results[f"{step}_{frame}_{obj}"] = logits[i, 0].float().numpy()
    np.savez(out, **results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--obj-score-bias", type=float, default=10.0)
    t = sub.add_parser("track")
    for name in ("checkpoint", "frames", "events", "out"):
        t.add_argument(name)
    t.add_argument("--fill-hole-area", type=int, default=None)
    args = parser.parse_args()
    if args.command == "seed":
        seed(args.out, args.seed, args.obj_score_bias)
    else:
        track(args.checkpoint, args.frames, args.events, args.out, args.fill_hole_area)


if __name__ == "__main__":
    main()
