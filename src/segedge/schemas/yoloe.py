"""The checks of ``yoloe`` folders: a YOLO-seg's (:mod:`segedge.schemas.yolo`, with ``params.num_classes`` =
``params.class_slots``) plus the class-embeddings input, the text encoder and its vocabulary, and the built-in
classes' embeddings when the checkpoint had some. A prompt-free folder (``params.prompt_free``) has its classes'
names and each anchor's best classes instead."""

from __future__ import annotations

from segedge.manifest_schema import Fields, describe, graph_shape
from segedge.schemas import yolo


def check(f: Fields, data: dict, shapes) -> None:
    what = "yoloe"
    yolo.check(f, data, shapes)
    params = data.get("params", {})
    if params.get("prompt_free") is True:  # a fixed vocabulary (segedge.export.yoloe_prompt_free): the classes
        if "class_topk" not in params or len(data.get("classes") or []) != params.get("num_classes"):
            f.fail("params.class_topk", "and one name per class in classes are what a prompt-free folder needs")
        return
    slots = f.integer(f.get(params, "class_slots", "params.class_slots"), "params.class_slots", lo=1, hi=1024)
    if params.get("num_classes") != slots:
        f.fail(
            "params.num_classes", f"must equal params.class_slots ({slots}), got {describe(params.get('num_classes'))}"
        )
    dim = f.integer(f.get(params, "embed_dim", "params.embed_dim"), "params.embed_dim", lo=1, hi=4096)
    graph_shape(f, shapes, "model", "class_embeddings", (1, slots, dim), what)
    count, length = 1, None  # older folders: one name of 77 tokens per call
    if "text_batch" in params:
        batch = f.get(params, "text_batch", "params.text_batch")
        if not isinstance(batch, list) or len(batch) != 2:
            f.fail("params.text_batch", f"must be [names, tokens], got {describe(batch)}")
        count = f.integer(batch[0], "params.text_batch[0]", lo=1, hi=1024)
        length = f.integer(batch[1], "params.text_batch[1]", lo=3, hi=77)
    graph_shape(f, shapes, "text_encoder", "tokens", (count, length), what)
    graph_shape(f, shapes, "text_encoder", "class_embedding", (count, dim), what)
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
