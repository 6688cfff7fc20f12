"""How much a gate measured on a few held-out images says about the images it never saw. Torch-free.

An agreement gate (int8 or bf16 against f32, :mod:`segedge.evaluation.agreement`) is a mean over held-out images,
and images differ a lot: on YOLOv8n-seg at 1024 one int8's per-image agreement went from 0.46 to 1.0 (coco128-seg,
``benchmarks/int8_generalisation.py``). A mean over 2 images passed the 0.97 gate for int8s that agreed 0.90 and
0.95 on 40 unseen images. So the gate takes, per prompt type, the **lower 95% confidence bound** of the mean over
images (one-sided Student t), and needs at least :data:`MIN_HELD_OUT_IMAGES` held-out images to be a gate at all.
"""

from __future__ import annotations

import math

import numpy as np

from segedge.precisions import MIN_HELD_OUT_IMAGES  # noqa: F401  (the vocabulary lives there)

# one-sided 95% quantiles of Student's t by degrees of freedom (beyond the table: the nearest smaller entry's, which is
# conservative; the normal's 1.645 in the limit)
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812, 12: 1.782,
        15: 1.753, 20: 1.725, 25: 1.708, 30: 1.697, 40: 1.684, 60: 1.671, 120: 1.658}  # fmt: skip


def t95(df: int) -> float:
    """The one-sided 95% quantile of Student's t with ``df`` degrees of freedom (conservative between table rows)."""
    if df < 1:
        raise ValueError("a confidence bound needs at least 2 values")
    return _T95[max(k for k in _T95 if k <= df)] if df <= 120 else 1.645


def lower_bound(values) -> float:
    """The lower one-sided 95% confidence bound of the mean of ``values`` (one number per image); with one value, the
    value itself (no spread can be measured: the record then says the gate is below :data:`MIN_HELD_OUT_IMAGES`)."""
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        return 0.0
    if v.size == 1:
        return float(v[0])
    return float(v.mean() - t95(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def summarise(rows: list[dict[str, float]]) -> dict:
    """One gate record from per-image rows (``{prompt type: agreement}`` each, :func:`agreement rows
    <segedge.evaluation.agreement.agreement_rows>`): the mean per type (as before), ``"lower_bound"`` per type,
    ``"gate"`` = the worst type's lower bound (what is compared with the threshold), ``"mean_gate"`` = the worst
    type's mean, ``"images"`` = how many images it was measured on and ``"objects"`` = how many objects (masks,
    prompts, crops) they held, when the rows count them (``"objects"``, :mod:`segedge.evaluation.agreement`)."""
    from segedge.evaluation.agreement import OBJECTS, prompt_scores  # (agreement imports the family registry)

    counts = [r[OBJECTS] for r in rows if OBJECTS in r]
    rows = [prompt_scores(r) for r in rows]
    types = list(dict.fromkeys(k for r in rows for k in r))
    per_type = {k: [r[k] for r in rows if k in r] for k in types}
    means = {k: round(float(np.mean(v)), 5) for k, v in per_type.items() if v}
    bounds = {k: round(lower_bound(v), 5) for k, v in per_type.items() if v}
    return {
        **means,
        "lower_bound": bounds,
        "gate": min(bounds.values()) if bounds else 0.0,
        "mean_gate": min(means.values()) if means else 0.0,
        "images": len(rows),
        **({OBJECTS: int(sum(counts))} if counts else {}),
    }
