"""YOLOE prompt-free (``-pf``) checkpoints -> a ``yoloe`` folder with the checkpoint's own, fixed vocabulary:
FastSAM's "segment everything", every mask named (4585 names for ultralytics' ``yoloe-*-seg-pf.pt``).

ultralytics makes them with ``YOLOEModel.set_vocab``: the classification branch of each level ends in an
``LRPCHead`` with ``vocab`` (the vocabulary's class embeddings fused into a linear layer), ``pf`` (a proposal filter:
an anchor of levels P3 and P4 is dropped unless ``sigmoid(pf(features)[0]) > 0.001``; P5 keeps every anchor) and
``loc`` (the box branch's last conv). Their predictions are ``YOLOEDetect.forward_lrpc`` with that filter; its
static export (``conf=0``) drops the filter, so this graph keeps it.

Graph ``model``, static: ``images (1, S, S, 3) uint8`` -> ``box_distribution (1, A, 4R)``, ``class_logits (1, A, T)``
(each anchor's T best class logits, best first; an anchor the filter drops has all T at :data:`DROPPED`, score 0),
``class_ids (1, A, T)`` int64 (their classes), ``mask_coefficients (1, A, 32)``, ``prototypes``. Every logit would be
``(1, A, 4585)``, 154 MB per image at 640; NMS needs each anchor's best class only, and the end-to-end head's top-k
(YOLOE-26, not agnostic) its T best: exact while no anchor has more than T classes above ``conf``
(T = ``class_topk``, :data:`~segedge.export_options.CLASS_TOPK` by default).

There is no text or visual-prompt graph: set_vocab removed the layers that compare features with embeddings.
"""

from __future__ import annotations

import types

from segedge.errors import CheckpointError
from segedge.export.common import one_torch_thread

#: ultralytics' ``forward_lrpc``: an anchor of an enabled LRPC level stays if its proposal score is above this
PF_CONF = 0.001
#: class logits kept per anchor in the graph's outputs
#: the logit of a dropped anchor's classes (sigmoid: 0.0 in float32, as ultralytics' -inf)
DROPPED = -1.0e4
OUTPUTS = ("box_distribution", "class_logits", "class_ids", "mask_coefficients", "prototypes")


def is_prompt_free(model) -> bool:
    return hasattr(model.model[-1], "lrpc")


def _rows(level):  # (1, C, h, w) -> (1, h*w, C)
    return level.permute(0, 2, 3, 1).reshape(1, -1, level.shape[1])


def _dense_forward(self, x):
    """``(box_distribution, class_logits (1, A, nc), mask_coefficients, prototypes)`` of a prompt-free head for
    ``x = [P3, P4, P5]``, the proposal filter applied (dropped anchors: :data:`DROPPED`)."""
    import torch

    from segedge.export.yolo_head import prototypes_of

    e2e = self.end2end
    box, cls, mask = (self.one2one_cv2, self.one2one_cv3, self.one2one_cv5) if e2e else (self.cv2, self.cv3, self.cv5)
    lrpc = self.one2one_lrpc if e2e and hasattr(self, "one2one_lrpc") else self.lrpc
    boxes, logits = [], []
    for i in range(self.nl):
        features = cls[i](x[i])
        boxes.append(_rows(lrpc[i].loc(box[i](x[i]))))
        if lrpc[i].enabled:  # vocab is a Linear over channels; the filter reads the first channel of pf
            level = lrpc[i].vocab(_rows(features))
            keep = lrpc[i].pf(features)[:, 0].flatten(1).sigmoid() > PF_CONF  # (1, h*w)
            level = torch.where(keep[..., None], level, torch.full_like(level, DROPPED))
        else:
            level = _rows(lrpc[i].vocab(features))
        logits.append(level)
    coefficients = torch.cat([_rows(mask[i](x[i])) for i in range(self.nl)], 1)
    return torch.cat(boxes, 1), torch.cat(logits, 1), coefficients, prototypes_of(self, x)


def _topk_forward(self, x, topk: int):
    """The graph's outputs (module docstring) for ``x = [P3, P4, P5]``, each anchor's ``topk`` best classes."""
    box, logits, coefficients, prototypes = _dense_forward(self, x)
    best, ids = logits.topk(min(topk, logits.shape[-1]), dim=-1)
    return box, best, ids, coefficients, prototypes


def prompt_free_graph(model):
    """``model`` (forward already :func:`_topk_forward`) as ``forward(images (1, S, S, 3) uint8)``."""
    import torch

    class PromptFree(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, images):
            return self.inner.predict(images.permute(0, 3, 1, 2).float() / 255.0)

    return PromptFree().eval()


def check_prompt_free(model, imgsz: int) -> None:
    """Raise :class:`CheckpointError` unless :func:`_dense_forward` gives ultralytics' own ``forward_lrpc`` (filter
    on, conf 0.001) on a probe image: raw box distributions, class logits of the anchors it keeps (none of the others
    kept), mask coefficients and prototypes within float32 rounding."""
    import torch

    head = model.model[-1]
    probe = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), one_torch_thread():
        for module in model.modules():
            if hasattr(module, "export"):
                module.export = False
        (_, ref_proto), preds = model.predict(probe)
        head.forward = types.MethodType(_dense_forward, head)
        box, logits, coefficients, prototypes = model.predict(probe)
        del head.forward
    kept = torch.ones(logits.shape[1], dtype=torch.bool) if preds["index"] is None else preds["index"]
    errors = {
        "boxes": (box[0] - preds["boxes"][0].T).abs().max(),
        "class logits": (logits[0, kept] - preds["scores"][0].T).abs().max(),
        "coefficients": (coefficients[0, kept] - preds["mask_coefficient"][0].T).abs().max(),
        "prototypes": (prototypes - ref_proto.permute(0, 2, 3, 1)).abs().max(),
    }
    bad = {k: float(v) for k, v in errors.items() if not float(v) <= 1e-4 * max(1.0, float(ref_proto.abs().max()))}
    if bad or not (logits[0, ~kept] == DROPPED).all():
        raise CheckpointError(f"prompt-free head differs from ultralytics' ({bad or 'dropped anchors'}): not supported")


def prompt_free_graphs(model, imgsz: int, split_c2f: bool, topk: int) -> tuple[dict, dict]:
    """``({"onnx": graph, "ir": graph}, layer_rewrites)`` of a prompt-free checkpoint in export mode: checked against
    ultralytics (:func:`check_prompt_free`), then the int8-friendly rewrites and (IR only) OpenVINO's C2f split, each
    checked to leave the outputs as they were (:func:`_same_outputs`)."""
    import copy

    import torch

    from segedge.export.yolo_layers import rewrite_for_int8, split_c2f_inputs

    check_prompt_free(model, imgsz)
    head = model.model[-1]
    for module in model.modules():
        if hasattr(module, "export"):
            module.export, module.format, module.dynamic = True, "onnx", False
    head.forward = types.MethodType(lambda self, x: _topk_forward(self, x, topk), head)
    probe = (torch.rand(1, imgsz, imgsz, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    with torch.no_grad(), one_torch_thread():
        before = prompt_free_graph(model)(probe)
        rewrites = rewrite_for_int8(model)
        graphs = {"onnx": prompt_free_graph(model)}
        graphs["ir"] = graphs["onnx"]
        if split_c2f:
            graphs["ir"] = prompt_free_graph(copy.deepcopy(model))
            rewrites["c2f_split_openvino"] = split_c2f_inputs(graphs["ir"].inner)
        for graph in {id(g): g for g in graphs.values()}.values():
            _same_outputs(before, graph(probe))
    return graphs, rewrites


def _same_outputs(before: tuple, after: tuple) -> None:
    """Raise :class:`CheckpointError` unless the graph's outputs after a rewrite equal those before within float32
    rounding. Class ids are not compared: two classes whose logits are equal within rounding may swap places."""
    limit = 1e-4 * max(1.0, float(before[4].abs().max()))
    for name, old, new in zip(OUTPUTS, before, after):
        if name == "class_ids":
            continue
        if not float((old - new).abs().max()) <= limit:
            raise CheckpointError(f"a layer rewrite changed the prompt-free head's {name}: not supported")


def export_prompt_free(
    model,
    checkpoint,
    out_dir,
    imgsz: int,
    variant,
    simplify: bool,
    split_c2f: bool,
    overwrite: bool,
    predict: dict,
    class_topk: int,
):
    """Write the folder of a prompt-free checkpoint (module docstring) to ``out_dir``; returns its path. ``predict``:
    the decoding defaults to record (YOLOE's predict defaults); ``class_topk``: classes kept per anchor."""
    from pathlib import Path

    import torch

    from segedge.export.common import export_graph, finish_manifest, staging_folder, tool_versions
    from segedge.export.fastsam import letterbox_preprocess
    from segedge.manifest import Manifest
    from segedge.postprocess.yolo_seg import LOGITS

    head = model.model[-1]
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    graphs, rewrites = prompt_free_graphs(model, imgsz, split_c2f, class_topk)
    image = torch.zeros(1, imgsz, imgsz, 3, dtype=torch.uint8)
    with staging_folder(out_dir, overwrite) as folder:
        with torch.no_grad():
            spec = export_graph(graphs["ir"], (image,), folder, "model", ["images"], list(OUTPUTS), simplify)
            if graphs["ir"] is not graphs["onnx"]:  # the ONNX (ONNX Runtime's graph) without the IR-only rewrite
                spec = export_graph(
                    graphs["onnx"], (image,), folder, "model", ["images"], list(OUTPUTS), simplify, openvino=False
                )
        strides = [int(s) for s in head.stride.tolist()]
        manifest = Manifest(
            family="yoloe",
            variant=variant or Path(checkpoint).stem,
            graphs={"model": spec},
            preprocess=letterbox_preprocess(imgsz),
            classes=[str(names[i]) for i in range(len(names))],
            source={"format": "ultralytics", "prompt_free": True},
            exporter=tool_versions("torch", "ultralytics", "onnx", "onnxslim", "openvino"),
            params={
                "prompt_free": True,
                "num_classes": len(names),
                "class_topk": int(spec.output("class_ids").shape[2]),
                "num_mask_coefficients": int(head.nm),
                "strides": strides,
                "anchors": int(spec.output("class_ids").shape[1]),
                "output_layout": LOGITS,
                "proposal_filter": PF_CONF,
                **({"layer_rewrites": rewrites} if rewrites else {}),
                **predict,
                "decoding": "topk" if head.end2end else "nms",
            },
        )
        finish_manifest(folder, manifest, Path(checkpoint))
    return Path(out_dir)
