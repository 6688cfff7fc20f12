"""The steps of ``segedge quantize`` that image and video graphs share: NNCF's and ONNX Runtime's quantizers for
one graph, the files of an int8 graph, and a model folder seen with candidate int8 graphs (so the real runtime
classes can run a candidate before it lands). :mod:`segedge.export.quantize` and
:mod:`segedge.export.quantize_video` use them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from segedge.export.quantize_recipes import WEIGHTS_MODE, Recipe, int8_saturates
from segedge.manifest import ModelFolder, onnx_data_name
from segedge.precisions import F32, INT8

#: the widest miss accuracy control is tried on. It reverts quantized layers to float a few at a time, re-ranking all
#: of them (every layer group on the tuning images) whenever a step makes things worse: on 2 cores 4-5 minutes a
#: ranking for YOLOv8n-seg at 1024. Measured (docs/precision.md): a 0.019 miss closed (0.951 -> 0.984); a 0.081 miss
#: narrowed to 0.033 and failed; a 0.105 miss did not move (0.865 -> 0.860) in 19 minutes.
MAX_ACCURACY_CONTROL_GAP = 0.05


def accuracy_control_skip(score: float, threshold: float, tuning_images: int) -> str | None:
    """Why NNCF's accuracy control does not run after a PTQ whose gate score (lower bound) is ``score`` < ``threshold``,
    with ``tuning_images`` set aside to tune on; None when it runs."""
    if not tuning_images:
        return "too few images to set aside for accuracy control"
    if threshold - score > MAX_ACCURACY_CONTROL_GAP:
        return (
            f"{threshold - score:.3f} short: accuracy control is tried on misses up to {MAX_ACCURACY_CONTROL_GAP} "
            "(wider ones it did not close, in 10-20 minutes on 2 cores); more calibration images of what the model will "
            "see, or bf16, are the way there"
        )
    return None


RANKING_IMAGES = 8  # NNCF accuracy control's ranking subset (its default is 300: every tuning image here)


def quantize_openvino(xml_path: Path, recipe: Recipe, data: list[dict], out_xml: Path, validation=None) -> str:
    """NNCF PTQ of an IR (``validation``: ``(dataset, fn, max_drop)`` for accuracy control), or its data-free weight
    compression for a ``weights_only`` recipe (method ``"weights"``); 7-bit weights
    (``overflow_fix``) when this CPU has no int8 dot product (:func:`~segedge.export.quantize_recipes.int8_saturates`).
    Returns the method."""
    import logging

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(xml_path))
    if recipe.weights_only:  # data-free: int8 weights, float activations
        compressed = nncf.compress_weights(model, mode=nncf.CompressWeightsMode(WEIGHTS_MODE))
        ov.save_model(compressed, str(out_xml), compress_to_fp16=False)
        return "weights"
    dataset = nncf.Dataset(data)
    kwargs = dict(
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER if recipe.transformer else None,
        subset_size=len(data),
        fast_bias_correction=recipe.fast_bias_correction,
        # OpenVINO splits an ONNX Conv with a bias into "<name>/WithoutBiases" (the convolution) + "<name>" (the Add)
        ignored_scope=nncf.IgnoredScope(
            names=[*recipe.float_nodes, *(f"{n}/WithoutBiases" for n in recipe.float_nodes)], validate=False
        )
        if recipe.float_nodes
        else None,
    )
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE if int8_saturates() else None)
    if validation is None:
        quantized, method = nncf.quantize(model, dataset, advanced_parameters=advanced, **kwargs), "ptq"
    else:
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        val_data, val_fn, max_drop = validation
        quantized = nncf.quantize_with_accuracy_control(
            model,
            dataset,
            nncf.Dataset(val_data),
            val_fn,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                # each ranking validates every layer group on this many of the tuning images (the worst-agreeing
                # ones): 8 instead of all 16 of an 80-image set halves the minutes a ranking takes
                max_num_iterations=8,
                num_ranking_workers=1,
                ranking_subset_size=min(RANKING_IMAGES, len(val_data)),
            ),
            advanced_quantization_parameters=advanced,
            **kwargs,
        )
        method = "accuracy_control"
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return method


def quantize_onnxruntime(onnx_path: Path, recipe: Recipe, data: list[dict], out_onnx: Path) -> str:
    """ONNX Runtime's static QDQ quantization (U8S8, per-channel weights, MinMax) of an ONNX graph; 7-bit weights
    (``reduce_range``) when this CPU has no int8 dot product (:func:`~segedge.export.quantize_recipes.int8_saturates`).

    Transformer graphs quantize only the operations that carry weights (Conv, Gemm, MatMul with a
    constant right-hand side): ORT's default also quantized LayerNorm parameters and the
    activation-by-activation attention products, which measured 0.53 mask IoU on MobileSAM."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(data)

        def get_next(self):
            return next(self._items, None)

    prepared = out_onnx.with_name(out_onnx.stem + ".pre.onnx")
    # A graph whose weights are kept beside it (above 2 GiB, segedge.export.graph_files.save_onnx) is
    # prepared and quantized with external data too; the int8 graph's weights then go to
    # onnx_data_name(out_onnx), which _move_in and _switch_manifest carry along.
    large = onnx_path.with_name(onnx_data_name(onnx_path.name)).is_file()
    external = (
        dict(
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            external_data_location=onnx_data_name(prepared.name),
        )
        if large
        else {}
    )
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True, **external)
    quantize_static(
        str(prepared),
        str(out_onnx),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=int8_saturates(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=large,
        nodes_to_exclude=list(recipe.float_nodes),
        **(
            {
                "op_types_to_quantize": ["Conv", "ConvTranspose", "Gemm", "MatMul"],
                "extra_options": {"MatMulConstBOnly": True},
            }
            if recipe.transformer
            else {}
        ),
    )
    for temporary in (prepared, prepared.with_name(onnx_data_name(prepared.name))):
        temporary.unlink(missing_ok=True)
    for leftover in out_onnx.parent.glob("*augmented_model*.onnx*"):  # the quantizer's temporary files
        leftover.unlink(missing_ok=True)
    return "ptq"


def candidate_folder(folder: ModelFolder, files: dict[str, dict[str, str]], float_parts: str = F32) -> ModelFolder:
    """The folder as the runtime would see it with ``files`` (graph -> backend -> path relative to
    the folder) as its int8, its float layers in ``float_parts`` on this CPU
    (:func:`segedge.runtime.precision.int8_float_parts`): lets the real runtime classes run a candidate before it
    lands."""
    from segedge.runtime.cpu import cpu_capabilities

    staged = {name for per in files.values() for graph in per.values() for name in int8_files(folder.path, graph)}
    listed = dict(folder.manifest.files) | {name: {"staged": True} for name in staged}  # not hashed: never written
    here = {"float_parts": float_parts, "cpu_class": cpu_capabilities().precision_class}
    agreement = {backend: dict(here) for per in files.values() for backend in per}
    manifest = dataclasses.replace(
        folder.manifest, quantized={INT8: {"graphs": files, "agreement": agreement}}, files=listed
    )
    return ModelFolder(folder.path, manifest)


def int8_files(root: Path, name: str) -> list[str]:
    """Every file of the int8 graph ``name`` (relative to ``root``): an IR's ``.xml`` and ``.bin``; an
    ONNX file and, when it was written, its external weights (:func:`segedge.manifest.onnx_data_name`)."""
    if name.endswith(".xml"):
        return [name, Path(name).with_suffix(".bin").as_posix()]
    data = onnx_data_name(name)
    return [name] + ([data] if (root / data).is_file() else [])
