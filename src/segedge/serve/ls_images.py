"""The bytes of a Label Studio task's image, the ways Label Studio gives them.

A task's image value is one of: an upload (``/data/upload/<project>/<file>``, or
``/storage-data/uploaded/?filepath=...``), a local-storage path (``/data/local-files/?d=<path under
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>``), a cloud storage URI (``s3://``, ``gs://``, ``azure-blob://``) or an
``http(s)`` URL. Label Studio paths are read through Label Studio (``--label-studio-url`` with an API key), local
files from the disk when the local-files root is given and holds them; cloud URIs through Label Studio's presign
endpoint for the task (``/tasks/<id>/presign/?fileuri=...``), as ``label-studio-sdk``'s ``get_local_path``
does; other URLs are downloaded as they are. The key is sent only to Label Studio's own address (scheme, host and
port), also across redirects: the presign endpoint redirects to the cloud's presigned URL, which gets no key. A
local-files path that leaves the local-files root (``..``, an absolute path elsewhere, a symlink out) is refused.

Label Studio's API keys: a legacy token is sent as ``Authorization: Token <key>``; a personal access token
(a JWT refresh token, Label Studio's default since 1.18) is exchanged at ``/api/token/refresh/`` for a
short-lived access token sent as ``Bearer``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from segedge.errors import SegedgeError

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob")
MAX_IMAGE_BYTES = 64 << 20
TIMEOUT_S = 30.0


class ImageFetchError(SegedgeError):
    """A task's image could not be read (say which URL and what to do)."""


@dataclass
class LabelStudioAccess:
    """Where Label Studio is and how to read its files: ``url`` (``http://host:8080``, or None: only http URLs
    and local files work), ``api_key`` (legacy token or personal access token), ``local_root``
    (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` when this backend runs where those files are)."""

    url: str | None = None
    api_key: str | None = None
    local_root: Path | None = None
    _access: tuple[str, float] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _auth_header(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.api_key.count(".") != 2:  # a legacy token
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:  # a personal access token: a refresh token, exchanged for an access token
            if self._access is None or self._access[1] < time.monotonic():
                body = json.dumps({"refresh": self.api_key}).encode()
                request = urllib.request.Request(
                    f"{self.url}/api/token/refresh/", body, {"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                        access = json.loads(response.read())["access"]
                except (urllib.error.URLError, KeyError, ValueError, OSError) as exc:
                    raise ImageFetchError(
                        f"Label Studio at {self.url} did not accept the API key ({exc}); copy it again from "
                        "Account & Settings -> Personal Access Token"
                    ) from None
                self._access = (access, time.monotonic() + 240)  # access tokens live 5 minutes
            return {"Authorization": f"Bearer {self._access[0]}"}

    def read(self, value: str, task_id=None, max_bytes: int = MAX_IMAGE_BYTES, what: str = "image") -> bytes:
        """The file's bytes for a task's image (or video: ``what``) value (see the module docstring), at most
        ``max_bytes``; ``task_id`` is needed for cloud storage URIs only."""
        if not isinstance(value, str) or not value:
            raise ImageFetchError(f"the task's {what} is {value!r}, not a URL or Label Studio path")
        parsed = urllib.parse.urlparse(value)
        if parsed.scheme in ("http", "https"):
            same_host = self.url is not None and value.startswith(self.url.rstrip("/") + "/")
            return self._download(value, self._auth_header() if same_host else {}, max_bytes)
        if parsed.scheme in CLOUD_SCHEMES:
            if task_id is None:
                raise ImageFetchError(f"{value}: a cloud storage URI needs its task's id to be presigned")
            path = f"/tasks/{int(task_id)}/presign/?fileuri={urllib.parse.quote(value, safe='')}"
            return self._download(self._in_label_studio(value, path), self._auth_header(), max_bytes)
        if parsed.scheme or not value.startswith("/"):
            raise ImageFetchError(
                f"{value}: not an http(s) URL, a cloud storage URI nor a Label Studio path "
                "(/data/upload/..., /data/local-files/?d=...)"
            )
        if value.startswith("/data/local-files") and self.local_root is not None:
            relative = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
            root = self.local_root.resolve()
            try:
                path = (root / relative).resolve()
            except (ValueError, OSError) as exc:  # a NUL byte, a symlink loop
                raise ImageFetchError(f"{value}: not a file path ({exc})") from None
            if path != root and root not in path.parents:
                raise ImageFetchError(f"{value}: {path} is outside the local-files root {root}: refused")
            if path.is_file():
                return _read_file(path, max_bytes)
        return self._download(self._in_label_studio(value, value), self._auth_header(), max_bytes)

    def _in_label_studio(self, value: str, path: str) -> str:
        if self.url is None:
            raise ImageFetchError(
                f"{value} is a file inside Label Studio: start segedge with --label-studio-url URL --api-key KEY "
                "(or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY) so it can read it"
            )
        return self.url.rstrip("/") + path

    def _download(self, url: str, headers: dict, max_bytes: int) -> bytes:
        request = urllib.request.Request(url, headers=headers)
        try:
            with _OPENER.open(request, timeout=TIMEOUT_S) as response:
                data = response.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            hint = " (check --api-key)" if exc.code in (401, 403) else ""
            raise ImageFetchError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ImageFetchError(f"{url}: cannot be read ({getattr(exc, 'reason', exc)})") from None
        if len(data) > max_bytes:
            raise ImageFetchError(f"{url}: larger than {max_bytes >> 20} MiB")
        return data


def _origin(url: str) -> tuple:
    """``(scheme, host, port)`` of ``url`` (the default port filled in), or ``(url,)`` when its port is not a number."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        return scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return (url,)


class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """urllib's redirects copy every header, ``Authorization`` too: drop it when the redirect leaves the origin
    (scheme, host, port) that the key was sent to (Label Studio's presign -> the cloud's presigned URL)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_KeyStaysHome)


def _read_file(path: Path, max_bytes: int) -> bytes:
    if path.stat().st_size > max_bytes:
        raise ImageFetchError(f"{path}: larger than {max_bytes >> 20} MiB")
    return path.read_bytes()
