"""Export (needs the `export` extra: torch, ultralytics, segment-anything, onnx, openvino).

Turns official checkpoints into self-describing model folders: static-shape ONNX graphs, their
OpenVINO IR, and ``segedge.json``. Nothing under ``segedge.runtime`` imports this package.
"""
