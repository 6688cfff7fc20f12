"""A real Label Studio for tests/test_label_studio.py, and the small pieces those tests share: Label Studio's REST
client, a recording HTTP server that stands for Label Studio or for another host, the prompts Label Studio's smart
tools send.

Label Studio runs from its own venv (``.venv-labelstudio``, made by scripts/test.sh: its pins conflict with
segedge's). Its first start on a fresh data folder runs about a minute of Django migrations; scripts/test.sh runs
them once, into ``<venv>/segedge-migrated/label_studio.sqlite3``, when it makes the venv, and each test run copies
that database into its temporary data folder (:func:`migrated_database` makes it, with a note, where it is missing).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import contextlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

LS_VENV = Path(os.environ.get("SEGEDGE_LABEL_STUDIO_VENV", Path(__file__).resolve().parents[1] / ".venv-labelstudio"))
LEGACY_TOKEN = "5e9edbe5e9edbe5e9edbe5e9edbe5e9edbe5e9ed"
TEMPLATE = "segedge-migrated"  # a data folder inside Label Studio's venv holding the migrated database
DATABASE = "label_studio.sqlite3"
QUIET = {"LATEST_VERSION_CHECK": "false"}  # no internet
DECODE = """
import json, sys, numpy as np
from label_studio_sdk.converter.brush import decode_rle
for i, r in enumerate(json.load(sys.stdin)["regions"]):
    image = decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)
    np.save(sys.argv[1] + f"/{i}.npy", image[:, :, 3] > 0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def migrated_database(venv: Path, note) -> Path:
    """``<venv>/segedge-migrated/label_studio.sqlite3``: Label Studio's SQLite database with every migration applied.
    scripts/test.sh makes it with the venv (the same command as here); a venv made before that gets it here, once,
    after ``note(text)`` says so. Every ``label-studio`` command migrates its data folder first; ``version`` does
    nothing else."""
    db = venv / TEMPLATE / DATABASE
    if db.is_file():
        return db
    note(f"{db} is missing: migrating Label Studio's database into it once (about a minute; scripts/test.sh does it)")
    work = Path(tempfile.mkdtemp(prefix=f"{TEMPLATE}.", dir=venv))
    env = {**os.environ, **QUIET, "LABEL_STUDIO_BASE_DATA_DIR": str(work)}
    done = subprocess.run(
        [str(venv / "bin" / "label-studio"), "version", "--data-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not (work / DATABASE).is_file():
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"Label Studio's migrations failed (exit {done.returncode}): {done.stderr[-2000:]}")
    try:
        work.rename(venv / TEMPLATE)
    except OSError:  # another run made it first
        shutil.rmtree(work, ignore_errors=True)
    return db


@contextmanager
def running_label_studio(venv: Path, data: Path, note):
    """Label Studio started on a free port with the data folder ``data`` (the migrated database copied into it),
    the user ``annotator@example.com`` and the legacy token; yields ``(url, seconds it took to answer /health)``."""
    shutil.copyfile(migrated_database(venv, note), data / DATABASE)
    port = free_port()
    env = {
        **os.environ,
        **QUIET,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "annotator@example.com",
        "LABEL_STUDIO_PASSWORD": "segedge-test-password",
        "LABEL_STUDIO_USER_TOKEN": LEGACY_TOKEN,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the test's own calls; segedge uses a personal token
        "ML_BLOCK_LOCAL_IP": "false",  # the backend runs on this machine (see docs/label-studio.md)
        "SSRF_PROTECTION_ENABLED": "false",
    }
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with open(data / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--port", str(port), "--data-dir", str(data)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() - t0 > 300:
                    raise RuntimeError(f"Label Studio did not start: {(data / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
            yield url, time.monotonic() - t0
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


class LabelStudio:
    """A running Label Studio and a client of its REST API (legacy token)."""

    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None, token: str | None = LEGACY_TOKEN, raw: bytes | None = None):
        headers = {"Authorization": f"Token {token}"} if token else {}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def upload(self, project: int, path: Path) -> dict:
        boundary = "segedgeboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            f"{self.url}/api/projects/{project}/import",
            body,
            {"Authorization": f"Token {LEGACY_TOKEN}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 201
        status, tasks = self.call("GET", f"/api/tasks?project={project}")
        return tasks["tasks"][-1]


def retrieve_predictions(studio: LabelStudio, project: int, task: dict) -> list[dict]:
    """Label Studio's "Retrieve predictions" on every task of ``project`` (the data manager's action), then the
    predictions it stored for ``task``."""
    status, out = studio.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}},
    )
    assert status == 200, out
    status, predictions = studio.call("GET", f"/api/predictions?task={task['id']}")
    assert status == 200, predictions
    return predictions


class Recorder:
    """An HTTP server on 127.0.0.1 (a free port) that records every request as ``(method, path, headers)`` in
    ``seen`` and answers ``GET`` from ``files`` (path with query -> bytes) or ``redirects`` (-> 303 Location), and
    ``POST /api/token/refresh/`` as Label Studio does (``{"access": ACCESS}``); anything else is a 404."""

    ACCESS = "access-token-from-refresh"

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                recorder.seen.append(("GET", self.path, dict(self.headers)))
                if self.path in recorder.files:
                    self._answer(200, recorder.files[self.path], {"Content-Type": "image/jpeg"})
                elif self.path in recorder.redirects:
                    self._answer(303, headers={"Location": recorder.redirects[self.path]})
                else:
                    self._answer(404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.seen.append(("POST", self.path, {**dict(self.headers), "body": body.decode()}))
                if self.path == "/api/token/refresh/":
                    self._answer(200, json.dumps({"access": recorder.ACCESS}).encode())
                else:
                    self._answer(404)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Recorder:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def keypoint(x: float, y: float, w: int, h: int, positive: bool = True) -> dict:
    """A KeyPointLabels click at ``(x, y)`` pixels of a ``w`` x ``h`` image, as Label Studio's smart tool sends it."""
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 0.6, "keypointlabels": ["object"]},
        "is_positive": positive,
        "id": f"k{x:.0f}",
        "from_name": "click",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def rectangle(box, w: int, h: int) -> dict:
    """A RectangleLabels box ``(x0, y0, x1, y1)`` pixels of a ``w`` x ``h`` image."""
    x0, y0, x1, y1 = box
    return {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": x0 * 100 / w,
            "y": y0 * 100 / h,
            "width": (x1 - x0) * 100 / w,
            "height": (y1 - y0) * 100 / h,
            "rotation": 0,
            "rectanglelabels": ["bus"],
        },
        "id": "r1",
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def post(url: str, body) -> tuple[int, dict]:
    """POST ``body`` as JSON to ``url``: ``(status, the JSON answer)``, error statuses included."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rle_pack_decode(data: list[int]) -> np.ndarray:
    """rle-pack's decoder, as label-studio-sdk ports it: Label Studio's brush RLE -> flat uint8 values (RGBA)."""
    bits = "".join(f"{b:08b}" for b in data)
    pos = 0

    def read(n):
        nonlocal pos
        pos += n
        return int(bits[pos - n : pos], 2)

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out, i = np.zeros(num, np.uint8), 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    return out


def decode_brushes(venv: Path, regions: list, tmp_path: Path) -> list[np.ndarray]:
    """Brush regions decoded by label-studio-sdk's own decoder (in Label Studio's venv ``venv``): ``(H, W)`` bool each."""
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DECODE, str(tmp_path)],
        input=json.dumps({"regions": regions}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [np.load(tmp_path / f"{i}.npy") for i in range(len(regions))]


def _note(request, text: str) -> None:
    """Print ``text`` now, past pytest's capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nnote: {text}", flush=True)


def label_studio_for_module(request, tmp_path_factory):
    """A running Label Studio (:class:`LabelStudio`) on a copy of the migrated database: a test module's
    ``label_studio = pytest.fixture(scope="module", name="label_studio")(label_studio_for_module)``."""
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.skip(f"no Label Studio at {exe}: scripts/test.sh installs it (or set SEGEDGE_LABEL_STUDIO_VENV)")
    data = tmp_path_factory.mktemp("label-studio")
    with running_label_studio(LS_VENV, data, lambda text: _note(request, text)) as (url, seconds):
        print(f"Label Studio answered /health after {seconds:.1f} s (database migrated beforehand)")
        yield LabelStudio(url)
