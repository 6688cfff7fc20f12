"""`segedge serve` as a command: its options reach the service (limits, cache), errors are one line before anything is
served, and the real process serves until SIGTERM.

Error and option cases run the command in this process (``segedge.cli.main``) with serving replaced, so a case that
wrongly gets as far as serving fails instead of blocking; one test starts the real process (the point there is the
process: it listens, answers, and ends cleanly on SIGTERM).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers import run_cli  # noqa: E402
from segedge.serve.client import Client, ServerError  # noqa: E402


def _status(fn):
    with pytest.raises(ServerError) as info:
        fn()
    return info.value.status, info.value.reason


def _serve_process(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "segedge", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_serves_until_sigterm(sam_tiny_folder, bus):
    proc = _serve_process("--model", str(sam_tiny_folder), "--port", "0", "--precision", "f32")
    watchdog = threading.Timer(180, proc.kill)  # a server that never says it listens fails the test, not hangs it
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("listening on ")[1].split()[0]
        client = Client(url)
        image_id = client.upload(bus)["image_id"]
        answer = client.predict(image_id, points=[[400, 500]])
        assert answer["count"] == 1 and answer["precision"] == "f32"
        client.close()
    finally:
        watchdog.cancel()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 143), err
    assert "Traceback" not in err


@pytest.fixture()
def never_serve(monkeypatch):
    """``segedge serve`` in this process must stop before it serves: serving (which would block the test) fails."""
    import segedge.serve.server as server_module

    def serve_forever(app, sock, announce=print, access_log=False):
        sock.close()
        raise AssertionError("serve got as far as serving")

    monkeypatch.setattr(server_module, "serve_forever", serve_forever)


def test_cli_refuses_a_port_in_use_and_wrong_folders(capsys, never_serve, sam_tiny_folder, clip_folder, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", "--model", sam_tiny_folder, "--port", port)
    assert code == 2 and "the port is in use" in err and "Traceback" not in err
    for args, message in (
        (["--model", clip_folder], "pass it as --clip"),
        (["--model", sam_tiny_folder, "--clip", clip_folder], "serve a FastSAM folder with it"),
        (["--model", tmp_path / "missing"], "missing"),
    ):
        code, _, err = run_cli(capsys, "serve", *args, "--port", "0")
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (args, err)


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--max-upload-mb", "0", "argument --max-upload-mb: expected a whole number of at least 1, got '0'"),
        ("--max-video-mb", "-5", "argument --max-video-mb: expected a whole number of at least 1, got '-5'"),
        ("--max-track-frames", "1.5", "argument --max-track-frames: expected a whole number of at least 1"),
        ("--cache-mb", "-1", "argument --cache-mb: expected a whole number of at least 0, got '-1'"),
        ("--cache-mb", "lots", "argument --cache-mb: expected a whole number of at least 0, got 'lots'"),
    ],
)
def test_cli_limit_options_are_checked(capsys, option, value, message):
    code, _, err = run_cli(capsys, "serve", "--model", "m", option, value)
    assert code == 2 and message in err.strip().splitlines()[-1], err


def test_cli_limits_reach_the_service(capsys, monkeypatch, sam_tiny_folder, bus, tmp_path):
    """`segedge serve --max-upload-mb 1 --max-video-mb 2 --max-track-frames 7 --cache-mb 3`: the service the command
    builds holds those limits, and its app (served here on a free port) refuses an upload one byte over each byte
    limit with 413 and one line, accepts one at the limit, and keeps about one decoded photo in 3 MiB of cache."""
    from PIL import Image

    import segedge.serve.app as app_module
    import segedge.serve.server as server_module
    from segedge.serve.server import start_in_thread

    built = {}
    create_app = app_module.create_app

    def record_app(service):
        built["service"] = service
        return create_app(service)

    def record_serving(app, sock, announce=print, access_log=False):
        built["app"], built["port"] = app, sock.getsockname()[1]
        sock.close()

    monkeypatch.setattr(app_module, "create_app", record_app)
    monkeypatch.setattr(server_module, "serve_forever", record_serving)
    limits = ["--max-upload-mb", "1", "--max-video-mb", "2", "--max-track-frames", "7", "--cache-mb", "3"]
    code, _, err = run_cli(capsys, "serve", "--model", sam_tiny_folder, "--port", "0", "--precision", "f32", *limits)
    assert code == 0 and f"model {sam_tiny_folder.name}: sam" in err and built["port"] > 0, err
    service = built["service"]
    assert (service.max_upload_bytes, service.video.store.max_bytes) == (2**20, 2 * 2**20)
    assert (service.video.max_track_frames, service.cache.max_bytes) == (7, 3 * 2**20)
    with start_in_thread(built["app"]) as running:
        client = Client(running.url)
        for path, limit, what in (("/api/images", 2**20, "upload"), ("/api/videos", 2 * 2**20, "video")):
            status, answer = client.request("POST", path, b"\0" * (limit + 1), "application/octet-stream")
            assert (
                status == 413
                and answer["error"]
                == f"the {what} is {(limit + 1) / 2**20:.1f} MiB, above the limit of {limit // 2**20} MiB"
            ), (path, status, answer)
            status, answer = client.request("POST", path, b"\0" * limit, "application/octet-stream")
            assert status == 415, (path, status, answer)  # at the limit: read, then refused as not an image/video
        # 3 MiB holds one decoded bus photo (810 x 1080 x 3 = 2.5 MiB): a second image pushes it out
        first = client.upload(bus)["image_id"]
        assert client.predict(first, points=[[400, 500]])["count"] == 1
        second = tmp_path / "second.png"
        Image.new("RGB", (900, 900), (40, 90, 200)).save(second)
        client.upload(second)
        status, reason = _status(lambda: client.predict(first, points=[[400, 500]]))
        assert status == 404 and "upload it again" in reason
        assert 0 < service.cache.nbytes <= 3 * 2**20
        client.close()


def test_cli_defaults_to_this_machine_only():
    from segedge.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m"])
    assert args.host == "127.0.0.1" and args.port == 8000
    from segedge.serve.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
