"""A small client for a ``segedge serve`` server, standard library only (for scripts, tests, benchmarks).

>>> client = Client("http://127.0.0.1:8000")                          # doctest: +SKIP
>>> image_id = client.upload("photo.jpg")["image_id"]                 # doctest: +SKIP
>>> answer = client.predict(image_id, points=[[500, 375]])            # doctest: +SKIP
>>> masks = decode_masks(answer)                                      # (N, H, W) bool, doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from pathlib import Path

import numpy as np

from segedge.errors import SegedgeError


class ServerError(SegedgeError):
    """The server answered with an error status; ``status`` and the server's one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.reason = message


class Client:
    """Calls one server over one keep-alive connection (make one client per thread)."""

    def __init__(self, url: str, timeout: float = 300.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SegedgeError(f"expected a server address like http://127.0.0.1:8000, got {url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, dict]:
        """``(status, JSON body)`` of one request (the connection is reopened once if the server closed it)."""
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
        try:
            return response.status, json.loads(data) if data else {}
        except ValueError:
            return response.status, {"error": data[:200].decode("utf-8", "replace")}

    def call(self, method: str, path: str, payload: dict | None = None) -> dict:
        """A JSON request; raises :class:`ServerError` for a 4xx/5xx answer."""
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.request(method, path, body, "application/json" if body is not None else None)
        if status >= 400:
            raise ServerError(status, data.get("error", ""))
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the API ---------------------------------------------------------------------------------
    def models(self) -> list[dict]:
        return self.call("GET", "/api/models")["models"]

    def upload(self, image: str | os.PathLike | bytes) -> dict:
        return self._upload("/api/images", image)

    def _upload(self, path: str, file: str | os.PathLike | bytes) -> dict:
        data = bytes(file) if isinstance(file, (bytes, bytearray)) else Path(file).read_bytes()
        status, answer = self.request("POST", path, data, "application/octet-stream")
        if status >= 400:
            raise ServerError(status, answer.get("error", ""))
        return answer

    def encode(self, image_id: str, model: str | None = None) -> dict:
        return self.call("POST", "/api/encode", {"model": model, "image_id": image_id})

    def predict(self, image_id: str, model: str | None = None, **prompts) -> dict:
        """``prompts``: ``points``, ``labels``, ``box``, ``multimask``, ``text`` (see the README's API section)."""
        return self.call("POST", "/api/predict", {"model": model, "image_id": image_id, **prompts})

    def everything(self, image_id: str, model: str | None = None, **options) -> dict:
        return self.call("POST", "/api/everything", {"model": model, "image_id": image_id, **options})

    # -- video (SAM 2 folders with their video graphs) ---------------------------------------------
    def upload_video(self, video: str | os.PathLike | bytes) -> dict:
        """``{video_id, frames, width, height, fps, cached}``."""
        return self._upload("/api/videos", video)

    def video_prompt(self, video_id: str, frame: int, obj_id: int = 1, model: str | None = None, **prompt) -> dict:
        """``prompt``: ``points``, ``labels``, ``box`` on ``frame`` for object ``obj_id``; every object's mask there."""
        body = {"model": model, "frame": frame, "obj_id": obj_id, **prompt}
        return self.call("POST", f"/api/videos/{video_id}/prompt", body)

    def track(
        self,
        video_id: str,
        model: str | None = None,
        max_frames: int | None = None,
        wait: bool = True,
        poll_s=0.5,
        reverse: bool = False,
    ) -> dict:
        """Track the prompted objects forward (``reverse``: back from the last prompted frame); with ``wait``, until
        the job ends: the job with every record, in the order tracked."""
        import time

        payload = {"model": model, "max_frames": max_frames, "reverse": reverse}
        job = self.call("POST", f"/api/videos/{video_id}/track", payload)
        records = []
        while wait and job["status"] == "running":
            time.sleep(poll_s)
            job = self.call("GET", f"/api/tracks/{job['job_id']}?since={len(records)}")
            records += job["records"]
        return {**job, "records": records, "since": 0} if wait else job


def decode_masks(answer: dict) -> np.ndarray:
    """``(N, H, W)`` bool masks of an answer's instances (COCO RLE, compressed or not), no pycocotools needed."""
    from segedge.postprocess.encode import rle_decode

    h, w = answer["height"], answer["width"]
    if not answer["instances"]:
        return np.zeros((0, h, w), bool)
    return np.stack([rle_decode(inst["rle"]) for inst in answer["instances"]])
