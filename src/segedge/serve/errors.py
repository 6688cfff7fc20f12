"""The errors ``segedge serve`` answers with: each carries its HTTP status (the app turns it into
``{"error": "one line"}`` with that status)."""

from __future__ import annotations

import hashlib

from segedge.errors import SegedgeError


class ServiceError(SegedgeError):
    """A request the server refuses; ``status`` is the HTTP status code."""

    status = 400


class NotFound(ServiceError):
    status = 404


class TooLarge(ServiceError):
    status = 413


class UnsupportedMedia(ServiceError):
    status = 415


class Busy(ServiceError):
    """The video session is tracking: it takes no prompt and no second job until the first ends."""

    status = 409


def upload_id(data: bytes, limit: int, kind: str, called: str) -> str:
    """The id of an uploaded file (the first 32 hex digits of its sha256), after refusing an empty body or one above
    ``limit`` bytes; ``kind`` ("image", "video") and ``called`` ("upload", "video") word the messages."""
    if len(data) == 0:
        raise ServiceError(f"the request body is empty: send the {kind} file's bytes")
    if len(data) > limit:
        raise TooLarge(f"the {called} is {len(data) / 2**20:.1f} MiB, above the limit of {limit / 2**20:g} MiB")
    return hashlib.sha256(data).hexdigest()[:32]
