"""The checks of CLIP folders: graph names and shapes against ``params`` and ``preprocess``."""

from __future__ import annotations

from segedge.manifest_schema import Fields, graph_shape, check_preprocess


def check(f: Fields, data: dict, shapes) -> None:
    what = "clip"
    params = data.get("params", {})
    vocab = f.path(f.get(params, "vocabulary", "params.vocabulary"), "params.vocabulary")
    if vocab not in data["files"]:
        f.fail("params.vocabulary", f"names {vocab!r}, which files does not list")
    pre = data.get("preprocess", {})
    for key in ("mean", "std"):
        f.get(pre, key, f"preprocess.{key}")
    size = check_preprocess(f, data)
    batch, _, _, _ = graph_shape(f, shapes, "image_encoder", "images", (None, 3, size, size), what)
    _, dim = graph_shape(f, shapes, "image_encoder", "image_embeds", (batch, None), what)
    graph_shape(f, shapes, "text_encoder", "tokens", (1, None), what)
    graph_shape(f, shapes, "text_encoder", "text_embeds", (1, dim), what)
