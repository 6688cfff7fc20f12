"""The served models and what the service checks of an upload: :class:`ServedModel` (a model folder opened under a
name, and what the page is told about it, read from its family's entry), unique names for folders, the media type of
uploaded bytes, and how many bytes a cached embedding or result holds (:mod:`segedge.serve.service` uses them)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from segedge.families import family
from segedge.serve.errors import UnsupportedMedia

#: The file signatures an upload may start with, and their media types.
SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


@dataclass
class ServedModel:
    """One model folder opened for serving under ``name`` (the folder's name, made unique)."""

    name: str
    family: str
    model: object  # segedge.FastSam or segedge.Sam
    # an open-vocabulary model's classes are its state: one request at a time sets them and runs (serve/service.py)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def open_vocabulary(self) -> bool:
        """Whether requests name the classes to find (YOLOE; not a prompt-free YOLOE folder's fixed vocabulary)."""
        return family(self.family).vocabulary and not getattr(self.model, "prompt_free", False)

    def info(self, text: bool) -> dict:
        m = self.model.folder.manifest
        spec = family(self.family)
        vocabulary = self.open_vocabulary
        prompts = [p for p in spec.prompts if p != "text"] + (["everything"] if spec.everything else [])
        prompts += ["text"] if (text or vocabulary or spec.concepts) and "text" in spec.prompts else []
        return {
            "name": self.name,
            "family": self.family,
            "variant": m.variant,
            "backend": self.model.backend_name,
            "precision": self.model.precision,
            "prompts": prompts,
            "multimask": spec.multimask,
            # what the page needs to know of the family (it compares no family names)
            "title": spec.title,
            "encodes_once": spec.promptable,  # an image embedding, cached; else the whole result is
            "point_rule": spec.point_rule,
            "score_name": spec.score_name,
            "class_labels": not spec.promptable,  # instances carry class names
            "text_names_classes": vocabulary,  # text is the classes to find (YOLOE), not a mask picked by CLIP
            "text_finds_concepts": spec.concepts,  # text: every instance of each concept, a box with it an example
            "classes": list(getattr(self.model, "names", []) or []) if vocabulary else [],
            "options": [p.name for p in spec.options()],  # its run-time options (segedge.parameters)
            "input_size": list(m.preprocess.get("size", [])),
            "folder": Path(self.model.folder.path).name,
            "video": bool(m.params.get("video")),  # SAM 2 folders with the video graphs track clips
        }


def unique_names(folders: list[Path]) -> list[str]:
    """The folders' names, with ``-2``, ``-3``, ... added where two are the same."""
    names: list[str] = []
    for folder in folders:
        base = Path(folder).resolve().name or "model"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}-{i}"
        names.append(name)
    return names


def sniff_format(data: bytes) -> str:
    """The media type of an uploaded image from its first bytes (JPEG, PNG, WebP, BMP, TIFF, GIF);
    raises :class:`UnsupportedMedia` for anything else. The decoder checks the rest."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for signature, media in SIGNATURES:
        if head.startswith(signature):
            return media
    raise UnsupportedMedia("not an image of an accepted type (JPEG, PNG, WebP, BMP, TIFF, GIF)")


def embedding_bytes(state) -> int:
    """Bytes of a SAM (one feature map) or SAM 2 (three) encoded image, with the split decoder's per-image
    tensors (about 10 MiB more than the embedding on SAM)."""
    return state.nbytes + 4096


def result_bytes(result) -> int:
    """Bytes a cached Result holds beyond its image (which the image cache already counts)."""
    masks = sum(int(c.nbytes) for c in result.roi_masks.crops)
    return masks + result.boxes.nbytes + result.scores.nbytes + 64 * len(result) + 4096
