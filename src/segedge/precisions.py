"""The precision vocabulary, in one place and free of heavy imports (the CLI's ``--help`` reads it): the
precisions a folder can run, what ``--precision`` accepts, and the fewest held-out images a gate needs.

Where each is decided: :mod:`segedge.runtime.precision` (what ``auto`` runs, from the manifest's records),
:mod:`segedge.evaluation` (the gates), :mod:`segedge.export.quantize` (calibrate -> quantize -> gate -> record).
"""

F32, BF16, INT8 = "f32", "bf16", "int8"
PRECISIONS = (F32, BF16, INT8)
AUTO = "auto"
CHOICES = (AUTO, *PRECISIONS)  # what --precision / precision= accept

# The fewest held-out images a gate may be measured on for auto to run what it passed (segedge.evaluation.gate_stats
# takes the lower 95% bound over them). Measured with benchmarks/int8_generalisation.py (YOLOv8n-seg at 1024, OpenVINO
# int8, per-image agreement on 80 coco128-seg images): docs/precision.md "How many held-out images".
MIN_HELD_OUT_IMAGES = 16
