"""SAM 3 as the ``sam3`` package builds it, sized from the checkpoint, made to run and trace on a CPU.

The architecture is the package's own (``sam3.model_builder.build_sam3_image_model``, instance interactivity on);
the sizes its builder hard-codes are read from the checkpoint instead (:func:`sizes_from_state`), so a smaller
model with the same structure exports through the same code. For the official ``sam3.pt`` they are the builder's
own numbers.

``sam3`` 0.1.4 assumes CUDA in a few places (:func:`cpu_patches`): ``device="cuda"`` in
``model/position_encoding.py`` (the precomputed sine tables) and ``model/decoder.py`` (the box relative-position
coordinates), ``.pin_memory()`` in ``model/geometry_encoders.py``, and ``import triton`` at the top of
``model/edt.py`` (reached from ``import sam3.model_builder``; CPU wheels of torch have no triton). Its ViT applies
RoPE through complex tensors (``view_as_complex``), which ONNX cannot express: :func:`real_rope` swaps in the same
rotation on cos / sin tables (exact).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import types

from segedge.errors import CheckpointError

#: the official SAM 3's sizes (sam3 0.1.4's model_builder)
OFFICIAL = {
    "vit_dim": 1024,
    "vit_depth": 32,
    "vit_global": (7, 15, 23, 31),
    "text_width": 1024,
    "text_layers": 24,
    "fusion_layers": 6,
    "decoder_layers": 6,
    "geometry_layers": 3,
    "ffn": 2048,
    "scoring_hidden": 2048,
}
HEAD_DIM = 64  # ViT and text transformer: heads = width / 64 (16 heads of 64 in the official model)
IMAGE_SIZE = 1008
PATCH = 14
CONTEXT_LENGTH = 32  # the text encoder's tokens


def cpu_patches() -> list[str]:
    """Make ``sam3`` 0.1.4 build and run on a machine without CUDA (module docstring); idempotent. Returns what was
    patched."""
    import torch

    done = []
    if "triton" not in sys.modules:
        try:
            import triton  # noqa: F401
        except ImportError:  # model/edt.py only decorates functions with it (a GPU distance transform)
            stub = types.ModuleType("triton")
            stub.jit = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
            stub.language = types.ModuleType("triton.language")
            stub.language.constexpr = object
            sys.modules["triton"], sys.modules["triton.language"] = stub, stub.language
            done.append("triton stub")
    if torch.cuda.is_available():
        return done
    from sam3.model import decoder, position_encoding

    sine = position_encoding.PositionEmbeddingSine
    if not getattr(sine, "_segedge_cpu", False):
        original = sine.__init__

        def init(self, *args, precompute_resolution=None, **kwargs):
            original(self, *args, precompute_resolution=None, **kwargs)
            if precompute_resolution is not None:  # the tables the package would put on CUDA, on the CPU
                r = precompute_resolution
                for size in ((r // 4, r // 4), (r // 8, r // 8), (r // 16, r // 16), (r // 32, r // 32)):
                    self.forward(torch.zeros((1, 1) + size))
                    self.cache[size] = self.cache[size].clone().detach()

        sine.__init__, sine._segedge_cpu = init, True
        coords = decoder.TransformerDecoder._get_coords
        decoder.TransformerDecoder._get_coords = staticmethod(
            lambda h, w, device: coords(h, w, "cpu" if str(device).startswith("cuda") else device)
        )
        pin = torch.Tensor.pin_memory
        torch.Tensor.pin_memory = lambda self, *a, **k: self if not torch.cuda.is_available() else pin(self, *a, **k)
        done += ["position_encoding", "decoder coordinates", "pin_memory"]
    return done


def _count(state: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in state if (m := pattern.match(k))), default=-1)


def sizes_from_state(state: dict) -> dict:
    """The sizes :data:`OFFICIAL` names, read from a checkpoint's ``detector.*`` tensors. Raises
    :class:`CheckpointError` for a checkpoint that is not SAM 3's."""
    d = "detector."
    vit, text = d + "backbone.vision_backbone.trunk.", d + "backbone.language_backbone.encoder."
    needed = (
        vit + "patch_embed.proj.weight",
        text + "token_embedding.weight",
        d + "transformer.decoder.query_embed.weight",
    )
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"not a SAM 3 checkpoint (sam3.pt): no {missing[0]}")
    patch = state[vit + "patch_embed.proj.weight"]
    if tuple(patch.shape[1:]) != (3, PATCH, PATCH):
        raise CheckpointError(f"not a SAM 3 checkpoint: patch embedding {tuple(patch.shape)}")
    depth = _count(state, vit + "blocks.")
    grid = (IMAGE_SIZE // PATCH) ** 2
    rope = [state.get(f"{vit}blocks.{i}.attn.freqs_cis") for i in range(depth)]
    if all(r is not None for r in rope):  # a global block's RoPE table covers the whole 72 x 72 grid
        global_blocks = tuple(i for i, r in enumerate(rope) if r.shape[0] == grid)
    elif depth == OFFICIAL["vit_depth"]:
        global_blocks = OFFICIAL["vit_global"]
    else:
        raise CheckpointError(f"a {depth}-block SAM 3 ViT without its RoPE tables: which blocks are global is unknown")
    ffn = {
        int(state[f"{d}{part}.0.linear1.weight"].shape[0])
        for part in ("transformer.encoder.layers", "transformer.decoder.layers", "geometry_encoder.encode")
    }
    if len(ffn) != 1:
        raise CheckpointError(f"SAM 3's transformers with different feed-forward widths {sorted(ffn)}: not supported")
    return {
        "vit_dim": int(patch.shape[0]),
        "vit_depth": depth,
        "vit_global": global_blocks,
        "text_width": int(state[text + "token_embedding.weight"].shape[1]),
        "text_layers": _count(state, text + "transformer.resblocks."),
        "fusion_layers": _count(state, d + "transformer.encoder.layers."),
        "decoder_layers": _count(state, d + "transformer.decoder.layers."),
        "geometry_layers": _count(state, d + "geometry_encoder.encode."),
        "ffn": ffn.pop(),
        "scoring_hidden": int(state[d + "dot_prod_scoring.prompt_mlp.layers.0.weight"].shape[0]),
    }


@contextlib.contextmanager
def sized_builder(sizes: dict):
    """``sam3.model_builder`` building a model of ``sizes`` (keys of :data:`OFFICIAL`) within the block: its classes
    are called with those sizes in place of the hard-coded ones; everything else is the package's."""
    import sam3.model_builder as mb

    def sized(cls, **override):
        def make(*args, **kwargs):
            return cls(*args, **{**kwargs, **{k: v for k, v in override.items() if k in kwargs}})

        return make

    heads = sizes["vit_dim"] // HEAD_DIM
    swaps = {
        "ViT": sized(
            mb.ViT, embed_dim=sizes["vit_dim"], depth=sizes["vit_depth"], num_heads=heads,
            global_att_blocks=tuple(sizes["vit_global"]),
        ),
        "VETextEncoder": sized(
            mb.VETextEncoder, width=sizes["text_width"], heads=sizes["text_width"] // HEAD_DIM,
            layers=sizes["text_layers"],
        ),
        "TransformerEncoderLayer": sized(mb.TransformerEncoderLayer, dim_feedforward=sizes["ffn"]),
        "TransformerDecoderLayer": sized(mb.TransformerDecoderLayer, dim_feedforward=sizes["ffn"]),
        "TransformerEncoderFusion": sized(mb.TransformerEncoderFusion, num_layers=sizes["fusion_layers"]),
        "TransformerDecoder": sized(mb.TransformerDecoder, num_layers=sizes["decoder_layers"]),
        "SequenceGeometryEncoder": sized(mb.SequenceGeometryEncoder, num_layers=sizes["geometry_layers"]),
        "MLP": sized(mb.MLP, hidden_dim=sizes["scoring_hidden"]),
    }  # fmt: skip
    saved = {name: getattr(mb, name) for name in swaps}
    try:
        for name, fn in swaps.items():
            setattr(mb, name, fn)
        yield mb
    finally:
        for name, cls in saved.items():
            setattr(mb, name, cls)


def bpe_path() -> str:
    """CLIP's BPE vocabulary (SAM 3's tokenizer is CLIP's; the ``sam3`` wheel does not ship the file)."""
    from open_clip.tokenizer import default_bpe

    return default_bpe()


def build_sam3(checkpoint: str | os.PathLike):
    """``(model, sizes)``: the checkpoint's SAM 3 image model (``Sam3Image`` with its interactive predictor, eval
    mode, CPU, float32) built by the package's builder at the checkpoint's sizes, its weights loaded (every tensor
    the model has must be in the checkpoint)."""
    import torch

    cpu_patches()
    try:
        raw = torch.load(os.fspath(checkpoint), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's unpickler raises many kinds
        raise CheckpointError(f"{checkpoint}: not a readable PyTorch checkpoint ({type(e).__name__})") from None
    state = raw["model"] if isinstance(raw, dict) and isinstance(raw.get("model"), dict) else raw
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint}: not a SAM 3 checkpoint (no state dict)")
    sizes = sizes_from_state(state)
    with sized_builder(sizes) as mb:
        model = mb.build_sam3_image_model(
            bpe_path=bpe_path(), device="cpu", eval_mode=True, checkpoint_path=None, load_from_HF=False,
            enable_inst_interactivity=True,
        )  # fmt: skip
    weights = {k[len("detector.") :]: v for k, v in state.items() if k.startswith("detector.")}
    weights.update(
        {
            "inst_interactive_predictor.model." + k[len("tracker.") :]: v
            for k, v in state.items()
            if k.startswith("tracker.")
        }
    )
    result = model.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("freqs_cis")]
    if missing:
        raise CheckpointError(f"{checkpoint}: {len(missing)} of SAM 3's tensors are missing (first: {missing[0]})")
    return model.float().eval(), sizes


def real_rope(model) -> int:
    """Apply the ViT's rotary position embedding with real cos / sin tables instead of complex multiplication
    (``sam3/model/vitdet.py``'s ``apply_rotary_enc``): the same numbers, in operations ONNX has. Returns how many
    attention layers were changed.

    The qkv rows of each head's queries and keys are reordered so that the pairs' real parts come first and their
    imaginary parts second (``q . k`` is unchanged: both move alike). The rotation then splits and stacks two
    halves of a head instead of ``D/2`` single floats, which OpenVINO's reference Concat took 3.1% of the seeded
    encoder's time for (:mod:`segedge.export.rope_fold` says why the ViT does not fold it into its projections)."""
    import torch

    def rotate(x, cos, sin):  # (B, heads, N, D): the D/2 real parts, then the D/2 imaginary parts
        re_, im = x.float().chunk(2, dim=-1)
        return torch.cat([re_ * cos - im * sin, re_ * sin + im * cos], -1)

    def apply_rope(self, q, k):
        if not self.use_rope:
            return q, k
        return rotate(q, self.rope_cos, self.rope_sin).type_as(q), rotate(k, self.rope_cos, self.rope_sin).type_as(k)

    changed = 0
    for block in model.backbone.vision_backbone.trunk.blocks:
        attn = block.attn
        if getattr(attn, "use_rope", False):
            attn.register_buffer("rope_cos", attn.freqs_cis.real.clone(), persistent=False)
            attn.register_buffer("rope_sin", attn.freqs_cis.imag.clone(), persistent=False)
            _halves_first(attn.qkv, attn.num_heads)
            attn._apply_rope = types.MethodType(apply_rope, attn)
            changed += 1
    return changed


def _halves_first(qkv, heads: int) -> None:
    """Reorder the query and key rows of a fused ``qkv`` Linear (``3 x heads x D`` outputs) in place: in each head,
    channels 0, 2, 4, ... then 1, 3, 5, ... (values untouched)."""
    import torch

    dim = qkv.out_features // 3
    head_dim = dim // heads
    within = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    order = torch.arange(qkv.out_features)
    for part in (0, 1):  # queries, keys
        for h in range(heads):
            start = part * dim + h * head_dim
            order[start : start + head_dim] = start + within
    with torch.no_grad():
        qkv.weight.copy_(qkv.weight[order])
        if qkv.bias is not None:
            qkv.bias.copy_(qkv.bias[order])
