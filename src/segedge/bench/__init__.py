"""`segedge bench`: PyTorch vs ONNX Runtime vs OpenVINO on the same images, in one run.

The PyTorch reference needs the export extra. Each segedge row runs in its own runtime-only
process (:mod:`segedge.bench.probe`, no torch imported), so its cold start and peak memory are
those of a deployment, not of this process.
"""
