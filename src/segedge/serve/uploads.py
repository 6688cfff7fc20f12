"""Raw-bytes request bodies of segedge serve (an image or a video file as the body): reading one under a size limit,
and OpenAPI's description of one."""

# No ``from __future__ import annotations`` here: FastAPI and pydantic read the annotations at run time.
from fastapi import Request

from segedge.serve.errors import TooLarge, UnsupportedMedia


def binary_body(description: str, media: str) -> dict:
    """OpenAPI's description of a request whose body is a file's raw bytes (``media``: e.g. ``image/*``)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {"application/octet-stream": binary, media: binary}
    return {"requestBody": {"required": True, "description": description, "content": content}}


async def body_bytes(request: Request, limit: int, what: str, example: str) -> bytes:
    """The request's raw body, refused past ``limit`` bytes (before reading it when its length is given)."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise UnsupportedMedia(f"send the file's bytes as the request body, not a form (curl --data-binary @{example})")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the {what} is {int(length) / 2**20:.1f} MiB, above the limit of {limit / 2**20:g} MiB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the {what} is above the limit of {limit / 2**20:g} MiB")
        chunks.append(chunk)
    return b"".join(chunks)
