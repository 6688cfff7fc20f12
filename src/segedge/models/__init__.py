"""The registry of supported models and the downloader for their official checkpoints."""

from segedge.models.registry import MODELS, ModelSpec, get, lookup

__all__ = ["MODELS", "ModelSpec", "get", "lookup"]
