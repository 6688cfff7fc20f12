"""onnxslim without re-serialising the weights on every pass: the same slimmed graph, sooner.

``onnxslim.slim`` repeats optimize + shape inference until the graph stops changing (up to 10 passes; SAM
ViT-B's encoder takes all 10). Its shape inference (``onnxslim.core.shape_infer``) first tries onnxslim's
symbolic shape inference, which fails on the traced SAM encoders and decoders in onnxslim 0.1.98 (an
``UnboundLocalError`` on LayerNormalization, after 0.1 s), then runs ``onnx.shape_inference.infer_shapes`` on
the whole model: ``ByteSize`` (upb serialises to measure: 2.7 s for ViT-B's 358 MB), ``SerializeToString``,
ONNX's C++ parse and serialise, ``ParseFromString`` back, each over every weight byte.

:func:`slim` runs ``onnxslim.slim`` with ``shape_infer`` swapped for :func:`_lean_shape_infer`: the same
symbolic attempt on the same model, and, when it fails, ONNX's shape inference on a *skeleton* of the model
(every field copied except the bytes of the large floating-point initializers, which become ONNX
external-data references keeping their name, dims and type). ONNX's shape inference takes values only from
shape-like inputs (Reshape's shape, Slice's starts, Resize's scales...: a few elements), never from a float
tensor of :data:`LEAN_MIN_BYTES` or more, and leaves initializers as they are, so the inferred skeleton
differs from what the stock path returns only by those bytes: the model itself takes the skeleton's every
other field and keeps its own initializers (nothing of the weights is copied). tests/test_export_slim.py
checks the slimmed models are identical, byte for byte, to plain ``onnxslim.slim``'s. Constant folding and
fusions still see every weight (onnxslim's Gemm fusion transposes MatMul weights; folding gathers ViT's
relative-position tables), and so does the symbolic attempt (it reads every initializer an Add takes).
"""

from __future__ import annotations

import contextlib

# Floating-point initializers at least this big (bytes) stay out of the skeleton: 16 KiB is 4096 float32
# elements, far beyond any shape-like input; they hold >99% of SAM's weight bytes.
LEAN_MIN_BYTES = 16 * 1024
_ITEMSIZE = {1: 4, 10: 2, 16: 2, 11: 8}  # TensorProto FLOAT, FLOAT16, BFLOAT16, DOUBLE: bytes per element
# onnxslim releases whose ``shape_infer`` :func:`_lean_shape_infer` mirrors (tests/test_export_slim.py checks the
# installed one gives identical graphs both ways and takes the lean path); any other slims the stock way.
LEAN_ONNXSLIM = ("0.1.98",)
_PLACEHOLDER = "segedge-slim-placeholder"  # the external-data location of a left-out tensor (no such file)
# Shape inferences run on a skeleton, and those whose result had to get the weights copied back in
# (ONNX changed the initializers: never seen); the tests read them.
_calls = {"lean": 0, "filled": 0}
# A matcher's own attributes (onnxslim.core.pattern.PatternMatcher): never a match's state, whatever a pattern names
_MATCHER_OWN = frozenset({"pattern", "priority", "pattern_dict", "output_names", "min_opset", "max_opset", "name"})


def slim(model):
    """``onnxslim.slim(model)`` (an ``onnx.ModelProto`` below 2 GiB) with lean shape inference; returns the
    slimmed model. onnxslim may change ``model`` in place, as it does when called directly. An onnxslim
    release not in :data:`LEAN_ONNXSLIM` runs as it is."""
    import onnxslim

    try:
        if getattr(onnxslim, "__version__", None) not in LEAN_ONNXSLIM:
            return onnxslim.slim(model)
        with _lean_shape_inference():
            slimmed = onnxslim.slim(model)
    finally:
        forget_matches()
    _check_no_placeholders(slimmed)
    return slimmed


def forget_matches() -> int:
    """Drop the graph nodes onnxslim's fusion matchers still hold; returns how many references were dropped.

    The matchers are module-level singletons (``onnxslim.core.pattern.registry``) that keep the nodes of their last
    match as attributes named after the pattern's nodes. Through those, the whole slimmed graph, every weight with
    it, stayed alive after ``slim`` returned, until the next slim replaced it: exporting a 600 MB graph left 640 MB in
    use, and SAM 3's real-size export carried the image encoder's 1.8 GB into the text encoder's peak."""
    try:
        from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS
    except ImportError:  # another onnxslim layout: nothing known to forget
        return 0
    dropped = 0
    for matchers in DEFAULT_FUSION_PATTERNS.values():
        for matcher in matchers:
            # a match sets one attribute per pattern node, named after it (a node, a tensor or a node's output list)
            state = vars(matcher)
            held = [name for name in getattr(matcher, "pattern_dict", {}) if name in state and name not in _MATCHER_OWN]
            for name in held:
                delattr(matcher, name)
            dropped += len(held)
    return dropped


@contextlib.contextmanager
def _lean_shape_inference():
    """Swap ``onnxslim.core.shape_infer`` (``onnxslim.slim`` imports it from there on every call) for the
    lean one while the block runs."""
    import onnxslim.core as core

    stock = core.shape_infer

    def lean(model):
        return _lean_shape_infer(model, stock)

    core.shape_infer = lean
    try:
        yield
    finally:
        core.shape_infer = stock


def _lean_shape_infer(model, stock):
    """onnxslim 0.1.98's ``shape_infer`` (``stock``) with its ONNX fallback run on a skeleton of ``model``.
    Its debug and forced-symbolic modes (environment variables) go to ``stock`` unchanged."""
    import onnx
    import onnxslim.core as core

    if core.DEBUG or core.FORCE_ONNXRUNTIME_SHAPE_INFERENCE:
        return stock(model)
    try:
        return core.SymbolicShapeInference.infer_shapes(model, auto_merge=core.AUTO_MERGE)
    except Exception:  # noqa: BLE001 - the stock function falls back on any error, and so must this
        pass
    # (The stock fallback writes a model of 2 GiB or more to a file first, protobuf's limit; a skeleton is
    # far below that, and ONNX infers the same either way.)
    skeleton = _skeleton(model)
    inferred = onnx.shape_inference.infer_shapes(skeleton)
    _calls["lean"] += 1
    if _same_messages(inferred.graph.initializer, skeleton.graph.initializer):
        _adopt(model, inferred)
        return model
    _calls["filled"] += 1
    _fill(inferred, model)
    return inferred


def _is_large(tensor) -> bool:
    """Whether ``tensor`` (an initializer) is a floating-point one of :data:`LEAN_MIN_BYTES` or more held in
    ``raw_data`` (size from its dims: reading ``raw_data`` would copy it)."""
    itemsize = _ITEMSIZE.get(tensor.data_type)
    if itemsize is None or tensor.external_data or not tensor.HasField("raw_data"):
        return False
    count = 1
    for d in tensor.dims:
        count *= int(d)
    return count * itemsize >= LEAN_MIN_BYTES


def _skeleton(model):
    """A copy of ``model`` whose large initializers (:func:`_is_large`) keep every field but ``raw_data``
    and point to :data:`_PLACEHOLDER` as ONNX external data instead."""
    from onnx import ModelProto, TensorProto

    skeleton = ModelProto()
    _copy_fields(skeleton, model, skip="graph")
    _copy_fields(skeleton.graph, model.graph, skip="initializer")
    for tensor in model.graph.initializer:
        copy = skeleton.graph.initializer.add()
        if not _is_large(tensor):
            copy.CopyFrom(tensor)
            continue
        _copy_fields(copy, tensor, skip="raw_data")
        copy.data_location = TensorProto.EXTERNAL
        entry = copy.external_data.add()
        entry.key, entry.value = "location", _PLACEHOLDER
    return skeleton


def _adopt(model, inferred) -> None:
    """Give ``model`` every field of ``inferred`` (its inferred skeleton) except the graph's initializers,
    which ``model`` keeps (shape inference left them as they were)."""
    for field in model.DESCRIPTOR.fields:
        if field.name != "graph":
            model.ClearField(field.name)
    _copy_fields(model, inferred, skip="graph")
    for field in model.graph.DESCRIPTOR.fields:
        if field.name != "initializer":
            model.graph.ClearField(field.name)
    _copy_fields(model.graph, inferred.graph, skip="initializer")


def _fill(inferred, model) -> None:
    """Put ``model``'s initializers, by name, in place of the placeholders of ``inferred`` (one copy each)."""
    originals = {tensor.name: tensor for tensor in model.graph.initializer}
    for tensor in inferred.graph.initializer:
        if _is_placeholder(tensor) and tensor.name in originals:
            tensor.CopyFrom(originals[tensor.name])
    _check_no_placeholders(inferred)


def _copy_fields(dst, src, skip: str) -> None:
    """Copy every set field of message ``src`` but the one named ``skip`` into ``dst`` (same type)."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _same_messages(a, b) -> bool:
    """Whether two repeated message fields hold the same messages, serialised byte for byte."""
    return len(a) == len(b) and all(x.SerializeToString() == y.SerializeToString() for x, y in zip(a, b))


def _is_placeholder(tensor) -> bool:
    return any(e.key == "location" and e.value == _PLACEHOLDER for e in tensor.external_data)


def _check_no_placeholders(model) -> None:
    """Raise :class:`SegedgeError` if an initializer of ``model`` is still a placeholder of the skeleton."""
    from segedge.errors import SegedgeError

    for tensor in model.graph.initializer:
        if _is_placeholder(tensor):
            raise SegedgeError(f"slimming lost the weights of {tensor.name} (onnxslim renamed or copied it)")
