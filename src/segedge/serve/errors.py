"""The errors ``segedge serve`` answers with: each carries its HTTP status (the app turns it into
``{"error": "one line"}`` with that status)."""

from __future__ import annotations

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
