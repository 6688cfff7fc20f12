"""The checks of ``yoloe`` folders: a YOLO-seg's (:mod:`segedge.schemas.yolo`, with ``params.num_classes`` =
``params.class_slots``) plus the class-embeddings input, the text encoder and its vocabulary, and the built-in
classes' embeddings when the checkpoint had some."""

from __future__ import annotations

from segedge.manifest_schema import Fields, describe, graph_shape
from segedge.schemas import yolo


def check(f: Fields, data: dict, shapes) -> None:
    what = "yoloe"
    yolo.check(f, data, shapes)
    params = data.get("params", {})
    slots = f.integer(f.get(params, "class_slots", "params.class_slots"), "params.class_slots", lo=1, hi=1024)
    if params.get("num_classes") != slots:
        f.fail(
            "params.num_classes", f"must equal params.class_slots ({slots}), got {describe(params.get('num_classes'))}"
        )
    dim = f.integer(f.get(params, "embed_dim", "params.embed_dim"), "params.embed_dim", lo=1, hi=4096)
    graph_shape(f, shapes, "model", "class_embeddings", (1, slots, dim), what)
    graph_shape(f, shapes, "text_encoder", "tokens", (1, None), what)
    graph_shape(f, shapes, "text_encoder", "class_embedding", (1, dim), what)
    for key in ("vocabulary", "class_embeddings"):
        if key == "class_embeddings" and key not in params:
            continue
        name = f.path(f.get(params, key, f"params.{key}"), f"params.{key}")
        if name not in data["files"]:
            f.fail(f"params.{key}", f"names {name!r}, which files does not list")
    if "class_embeddings" in params:
        names = f.get(params, "default_classes", "params.default_classes")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            f.fail("params.default_classes", f"must be a list of class names, got {describe(names)}")
        if len(names) > slots:
            f.fail("params.default_classes", f"has {len(names)} names, more than params.class_slots ({slots})")
