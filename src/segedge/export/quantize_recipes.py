"""How each graph is quantized to int8, and why (measured choices; see the README's int8 section).

One recipe per (family, graph): the NNCF parameters for the OpenVINO IR and the matching settings of
ONNX Runtime's own static quantizer for the ONNX graph, plus the nodes kept in float. Nodes are found
from the graph's structure, not from hard-coded names, so any checkpoint of the family works.

Why these choices:

- **Preset MIXED everywhere**: symmetric int8 weights, *asymmetric* activations. SiLU/GELU outputs
  are not symmetric around zero; on YOLOv8n-seg MIXED kept mask IoU 0.980 vs f32 where PERFORMANCE
  (symmetric) gave 0.975 at ~8% less time.
- **FastSAM / YOLO-seg** (CNN, no model type): the box decoding after the Detect head (DFL softmax,
  anchor arithmetic, stride scaling) stays float: its outputs are pixel coordinates, and int8 steps
  there move every box. Measured on YOLOv8n-seg at 1024: all-int8 0.968 IoU / 53 ms; decode in float
  0.980 / 47 ms; ultralytics' choice (the whole head float) 0.984 / 70 ms. Fast bias correction on
  (full bias correction measured worse here, 0.963, and slower). Folders exported with the default
  ``channels_last_logits`` outputs have no decoding in the graph at all (the runtime decodes the
  candidate boxes in float NumPy), so only the head's layout ops are listed there.
- **SAM / MobileSAM encoder** (ViT / TinyViT): ``ModelType.TRANSFORMER`` keeps softmax, LayerNorm
  and GELU float and applies SmoothQuant to the linear layers, the standard recipe for ViTs.
- **SAM decoder**: TRANSFORMER too, and the prompt encoder's coordinate path stays float: it projects
  point coordinates through a random Fourier matrix into sin/cos, where an int8 step is a shift of
  the click. The decoder is calibrated on prompts sampled on the calibration images (clicks, boxes
  around the masks of those clicks, click + box, and refinement with mask_input), not on zeros.
  Folders with the split decoder also get an int8 ``decoder_prompt`` (the per-prompt part, which every
  prompt without a mask input runs), calibrated on the same prompts; ``decoder_image`` runs once per
  image and stays f32. MobileSAM, OpenVINO, per prompt: f32 13.6 ms, int8 9.7, bf16 8.8 (the whole
  decoder f32: 16.9), Zen 4.
- **SAM decoders: products of two activations float** (:func:`attention_products`: the two-way transformer's
  q·kᵀ and softmax·v, and the mask product of the hypernetwork outputs with the upscaled embedding). OpenVINO's int8 kernels for them are wrong on AMX: a seeded tiny SAM's
  int8 ``decoder_prompt`` agreed 0.50 (low-res mask IoU) with f32 on a Xeon with AMX and 0.966 on the same IR files
  under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``; with the 12 quantizers ahead of those products removed, 0.967 on
  AMX (weights and activations of the linear layers stay int8; the click then agrees 0.95 on both). The encoders'
  int8 measured the same on both ISAs (cosine 0.99974 with f32) and is unchanged.
- **CLIP image encoder**: TRANSFORMER. The text encoder is not quantized: it runs once per distinct
  text and its embeddings are cached, so int8 would save nothing a user notices.
- **ONNX Runtime**: its own ``quantize_static`` (QDQ, U8S8, per-channel weights, MinMax), not NNCF's
  ONNX output: NNCF's QDQ placement ran *slower* than f32 on ORT (163 vs 103 ms, YOLOv8n-seg), while
  ORT's own quantizer places Q/DQ where its int8 kernels fuse them (70 ms, IoU 0.970). ``reduce_range``
  (7-bit) was faster still (53 ms) but lost accuracy (0.941) and is off on CPUs with VNNI. On a CPU without an
  int8 dot product (AVX2 only) ORT's U8S8 kernels add pairs of products in 16 bits (``vpmaddubsw``), which
  saturate with 8-bit weights: ORT's int8 agreed 0.59 with f32 on a seeded SAM there (OpenVINO's, whose oneDNN
  kernels do the same, 0.86 where a VNNI CPU measured 0.95); quantizing on such a CPU keeps weights to 7 bits on
  both backends (:func:`int8_saturates`), and ``auto`` runs int8 on one only when it was gated on one
  (:mod:`segedge.runtime.precision`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segedge.errors import SegedgeError
from segedge.families import family as family_spec


@dataclass(frozen=True)
class Recipe:
    """Quantization settings of one graph. ``float_nodes``: node names (ONNX names, which the IR keeps)
    left in float on both backends; ``transformer``: NNCF's TRANSFORMER model type."""

    graph: str
    transformer: bool
    float_nodes: tuple[str, ...] = ()
    float_products: int = 0  # how many of float_nodes are products of two activations (attention_products)
    fast_bias_correction: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    weights_only: bool = False  # int8 weights, float activations: NNCF's data-free weight compression (SAM 3 text)
    backends: tuple[str, ...] = ("openvino", "onnxruntime")  # the backends this recipe makes an int8 for

    def describe(self, seven_bit: bool = False) -> dict[str, Any]:
        """What the manifest records about how this graph was quantized (``seven_bit``: weights kept to 7 bits, see
        :func:`int8_saturates`)."""
        if self.weights_only:
            return {"nncf": {"compress_weights": WEIGHTS_MODE, "activations": "float"}, "why": self.notes}
        return {
            "nncf": {
                "preset": "mixed",
                "model_type": "transformer" if self.transformer else None,
                "fast_bias_correction": self.fast_bias_correction,
                "float_nodes": len(self.float_nodes),
                **({"float_products": self.float_products} if self.transformer else {}),
                "overflow_fix": "enable" if seven_bit else "nncf default",
            },
            **(
                {
                    "onnxruntime": {
                        "format": "QDQ",
                        "activations": "uint8 asymmetric",
                        "weights": "int8 symmetric per-channel",
                        "calibration": "minmax",
                        "reduce_range": seven_bit,
                        "float_nodes": len(self.float_nodes),
                    }
                }
                if "onnxruntime" in self.backends
                else {}
            ),
            "why": self.notes,
        }


WEIGHTS_MODE = "int8_asym"  # NNCF's CompressWeightsMode for weights-only int8: per output channel, with zero points


def int8_saturates(cpu=None) -> bool:
    """Whether int8 made on ``cpu`` (default: this one) uses 7-bit weights (ONNX Runtime's ``reduce_range``, NNCF's
    ``overflow_fix``): yes on a CPU without an int8 dot product (no VNNI), whose int8 kernels (ORT's U8S8, oneDNN's
    AVX2) add pairs of products in 16 bits (``vpmaddubsw``), which saturate with full 8-bit weights."""
    from segedge.runtime.cpu import cpu_capabilities

    return (cpu or cpu_capabilities()).int8_dot is False


def recipes(family: str, onnx_models: dict[str, Any]) -> dict[str, Recipe]:
    """The recipe of every graph to quantize in a ``family`` folder (``onnx_models``: graph name ->
    loaded ``onnx.ModelProto`` of the f32 graph), from the family's entry (``Family.quantize_recipe``, one of the
    functions below). Graphs left out are not quantized."""
    return family_spec(family).recipe_function()(onnx_models)


def offered_backends(family: str, recipe: dict, backends: tuple[str, ...], log) -> tuple[str, ...]:
    """The asked ``backends`` every graph's recipe makes an int8 for (SAM 3: OpenVINO only);
    the others are said in one line, and none left is an error."""
    offered = tuple(b for b in backends if all(b in r.backends for r in recipe.values()))
    made = [b for b in ("openvino", "onnxruntime") if all(b in r.backends for r in recipe.values())]
    title = family_spec(family).title
    if not offered:
        raise SegedgeError(
            f"{title} folders get int8 for {', '.join(made)} only; use " + " or ".join(f"--backend {b}" for b in made)
        )
    for b in backends:
        if b not in offered:
            log(f"{b}: {title} folders get int8 for {', '.join(made)} only; {b} runs them in f32 (skipped)")
    return offered


def yolo_recipes(onnx_models: dict[str, Any]) -> dict[str, Recipe]:
    """FastSAM / YOLO-seg: one CNN graph."""
    return {
        "model": Recipe(
            "model",
            False,
            yolo_decode_nodes(onnx_models["model"]),
            notes="CNN; box decoding (DFL, anchors, strides) float: in NumPy, or kept float in older layouts' graphs",
        )
    }


def sam_recipes(onnx_models: dict[str, Any], encoder: str = "ViT/TinyViT") -> dict[str, Recipe]:
    """SAM-kind folders: the image encoder and the decoders (whole, and the split decoder's per-prompt part)."""
    coords = (
        "transformer type; the prompt encoder's coordinate projection (Fourier features, sin/cos) and the "
        "attention products (q·kᵀ, softmax·v: OpenVINO's int8 for them is wrong on AMX) kept float"
    )
    out = {
        "encoder": Recipe("encoder", True, notes=encoder + ": transformer type (SmoothQuant; softmax/LayerNorm float)"),
        "decoder": _decoder_recipe("decoder", onnx_models["decoder"], coords),
    }
    if "decoder_prompt" in onnx_models:  # the split decoder's per-prompt part; decoder_image runs once per image, f32
        out["decoder_prompt"] = _decoder_recipe(
            "decoder_prompt",
            onnx_models["decoder_prompt"],
            coords + "; calibrated on the same sampled prompts without a mask input",
        )
    return out


def sam2_recipes(onnx_models: dict[str, Any]) -> dict[str, Recipe]:
    """SAM 2: as SAM's, with its Hiera encoder (the video graphs: :mod:`segedge.export.quantize_video`)."""
    return sam_recipes(onnx_models, "Hiera + FPN neck")


def clip_recipes(onnx_models: dict[str, Any]) -> dict[str, Recipe]:
    """CLIP: the image encoder only."""
    return {
        "image_encoder": Recipe(
            "image_encoder", True, notes="ViT-B/32: transformer type; the text encoder stays f32 (cached per text)"
        )
    }


def sam3_recipes(onnx_models: dict[str, Any]) -> dict[str, Recipe]:
    """SAM 3, OpenVINO only: the image encoder in int8 (NNCF's post-training quantization, transformer type, as SAM's
    encoders: weights and activations), the text encoder's weights to int8 with float activations (NNCF's data-free
    weight compression). Those two hold nearly all of SAM 3's weights (the real checkpoint's f32 folder is about
    3.4 GB): int8 makes them a quarter. The ViT at 1008 px is most of an image's time: at the real size on a CPU with
    VNNI (AVX512_VNNI EPYC) its full int8 ran 10.4 s against 15.9 s with int8 weights only and 14.5 s in bf16
    (docs/sam3.md). The text encoder runs once per distinct text, so its weights are what matters there. The
    grounding graph (detector) and the click decoder stay f32: they are a few percent of the weights, and on a seeded
    SAM 3 (AVX2 EPYC) their int8 weights cost the most agreement (text prompts' matched mask IoU with f32 0.954 with
    only those two compressed, 0.974 with only the encoders, 0.950 with all four). ONNX Runtime: SAM 3 runs f32
    there (its dynamic quantization of the text encoder would round activations per call)."""
    out = {}
    if "image_encoder" in onnx_models:
        out["image_encoder"] = Recipe(
            "image_encoder",
            True,
            notes="ViT + neck: transformer type (SmoothQuant; softmax/LayerNorm float)",
            backends=("openvino",),
        )
    if "text_encoder" in onnx_models:
        out["text_encoder"] = Recipe(
            "text_encoder",
            True,
            notes="weights int8 per output channel (NNCF compress_weights, int8_asym), activations float",
            weights_only=True,
            backends=("openvino",),
        )
    return out


def yolo_decode_nodes(model) -> tuple[str, ...]:
    """Nodes of a YOLO Detect/Segment head that decode boxes: everything inside the head's module
    scope (``/model.N/``, the scope of its ``/dfl/`` or ``/cv2.`` nodes) that is not one of its conv branches
    (``cv2`` box, ``cv3`` class, ``cv4`` mask coefficients, ``proto``)."""
    names = [n.name for n in model.graph.node]
    # ultralytics' head decodes in its /dfl/ module; segedge's channels-last head (export/yolo_head.py)
    # decodes in the head's own scope, which holds the /cv2./ box branch
    marker = next((m for m in ("/dfl/", "/cv2.") for n in names if m in n), None)
    if marker is None:
        return ()
    scope = next(n for n in names if marker in n).split(marker)[0] + "/"
    branches = ("/cv2.", "/cv3.", "/cv4.", "/proto/", "/one2one_cv")
    return tuple(n for n in names if n.startswith(scope) and not any(b in n[len(scope) - 1 :] for b in branches))


def _decoder_recipe(graph: str, model, notes: str) -> Recipe:
    """A SAM decoder's recipe: transformer type, the click's coordinate path and the products of two activations
    kept float."""
    products = attention_products(model)
    return Recipe(graph, True, coordinate_nodes(model, "point_coords") + products, len(products), notes=notes)


def attention_products(model) -> tuple[str, ...]:
    """MatMul nodes whose two inputs are both activations (neither an initializer nor a Constant's output): in a
    transformer, the attention products q·kᵀ and softmax·v (in SAM's decoder also the final mask product)."""
    constants = {i.name for i in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return tuple(
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and len(n.input) == 2 and not any(i in constants for i in n.input)
    )


def coordinate_nodes(model, input_name: str) -> tuple[str, ...]:
    """Nodes on the path from graph input ``input_name`` up to and including the first Sin/Cos
    (the positional encoding of coordinates): every node that depends on the input and feeds a Sin
    or Cos, plus those Sin/Cos nodes."""
    nodes = list(model.graph.node)
    depends = {input_name}
    downstream = []
    for node in nodes:  # ONNX nodes are topologically sorted
        if any(i in depends for i in node.input):
            downstream.append(node)
            if node.op_type not in ("Sin", "Cos"):
                depends.update(node.output)
    producers = {o: n for n in downstream for o in n.output}
    keep: set[str] = set()
    stack = [n for n in downstream if n.op_type in ("Sin", "Cos")]
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        stack.extend(producers[i] for i in node.input if i in producers)
    return tuple(n.name for n in nodes if n.name in keep)
