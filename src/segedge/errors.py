"""User-facing errors.

Every error segedge raises on purpose is a :class:`SegedgeError`: its message says what was wrong
and what to do about it. The CLI prints these messages without a traceback.
"""

from __future__ import annotations


class SegedgeError(Exception):
    """A problem the user can fix; the message names the thing and the remedy."""


class ModelFolderError(SegedgeError):
    """A model folder is missing, incomplete, tampered with or of an unknown format."""


class BackendNotInstalledError(SegedgeError):
    """The requested inference backend's Python package is not installed."""


class BackendError(SegedgeError):
    """A backend was given inputs it cannot run, or failed to load a model."""


class ImageError(SegedgeError):
    """An image could not be read or written."""


class PromptError(SegedgeError, ValueError):
    """A prompt (point, box, mask, text) is malformed or outside the image."""


class CheckpointError(SegedgeError):
    """A checkpoint file is missing, truncated or of the wrong kind."""


class DownloadError(SegedgeError):
    """A weights download failed or its checksum did not match."""
