"""Weights download, tested against a local HTTP server (tests never touch the network)."""

import hashlib
import http.server
import threading
from functools import partial

import pytest

from segedge.errors import DownloadError
from segedge.models import registry
from segedge.models.download import download, fetch


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    (root / "weights.pt").write_bytes(payload)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", payload
    httpd.shutdown()


def test_download_verifies_sha256(server, tmp_path):
    base, payload = server
    good = hashlib.sha256(payload).hexdigest()
    dest = download(f"{base}/weights.pt", tmp_path / "dl" / "weights.pt", good, progress=False)
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.pt"]


def test_checksum_mismatch_saves_nothing(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="expected 0000.*nothing was saved"):
        download(f"{base}/weights.pt", tmp_path / "dl" / "weights.pt", "0" * 64, progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_http_error_and_unreachable(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{base}/missing.pt", tmp_path / "x.pt", progress=False)
    with pytest.raises(DownloadError, match="cannot download http://127.0.0.1:9/"):
        download("http://127.0.0.1:9/x.pt", tmp_path / "y.pt", progress=False, timeout=5)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    base, payload = server
    dest = tmp_path / "weights.pt"
    dest.write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    assert download("http://127.0.0.1:9/never-contacted", dest, good, progress=False) == dest


def test_fetch_registry_entry_into_weights_dir(server, tmp_path, monkeypatch):
    base, payload = server
    monkeypatch.setenv("SEGEDGE_WEIGHTS_DIR", str(tmp_path / "cache"))
    spec = registry.ModelSpec(
        "test", "fastsam", "weights.pt", f"{base}/weights.pt", hashlib.sha256(payload).hexdigest(), 1024, ""
    )
    path = fetch(spec, progress=False)
    assert path == tmp_path / "cache" / "weights.pt" and path.read_bytes() == payload


def test_registry_lookup():
    assert registry.lookup("FastSAM-s").url.endswith("/FastSAM-s.pt")
    assert registry.lookup("fastsam-s").name == "FastSAM-s"
    assert registry.lookup("sam_vit_b_01ec64.pth").sha256.startswith("ec2df627")
    assert registry.lookup("mobile-sam").filename == "mobile_sam.pt"
    assert registry.lookup("nope") is None
    for spec in registry.MODELS.values():
        assert spec.url.startswith("https://") and spec.url.endswith(spec.filename)
        assert spec.sha256 is None or len(spec.sha256) == 64


def _zip(path, members: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_calibration_set_downloads_unpacks_once_and_is_the_quantize_default(server, tmp_path, monkeypatch, capsys):
    """`segedge quantize` without --calibration calibrates on coco128: downloaded once, unpacked whole,
    its images listed in order (the held-out fifth is the last)."""
    import dataclasses

    from segedge.cli.quantize import calibration_images

    base, _ = server
    www = tmp_path / "www"
    photos = {f"coco128/images/train2017/{i:012d}.jpg": bytes([i]) * 100 for i in range(7)}
    _zip(www / "coco128.zip", photos | {"coco128/labels/train2017/000000000000.txt": b"0 0.5 0.5 0.1 0.1\n"})
    monkeypatch.setenv("SEGEDGE_DATASETS_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(
        registry.DATASETS, "coco128", dataclasses.replace(registry.DATASETS["coco128"], url=f"{base}/coco128.zip")
    )
    images = calibration_images(None)
    assert [p.name for p in images] == [f"{i:012d}.jpg" for i in range(7)]
    assert images[3].read_bytes() == bytes([3]) * 100
    assert "no --calibration given: calibrating on coco128" in capsys.readouterr().err
    # unpacked into place, the archive removed; a second call does not download (the server is gone)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["coco128"]
    (www / "coco128.zip").unlink()
    assert calibration_images(["COCO128"]) == images
    # a local folder with the set's name is a folder, not the set
    local = tmp_path / "coco128"
    local.mkdir()
    (local / "a.png").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in calibration_images(["coco128"])] == ["a.png"]


def test_calibration_archive_outside_paths_and_damage_are_refused(server, tmp_path, monkeypatch):
    import dataclasses

    from segedge.models.download import fetch_dataset

    base, _ = server
    monkeypatch.setenv("SEGEDGE_DATASETS_DIR", str(tmp_path / "cache"))
    spec = registry.DATASETS["coco128"]
    _zip(tmp_path / "www" / "evil.zip", {"coco128/images/train2017/a.jpg": b"x", "../../escaped.txt": b"x"})
    with pytest.raises(DownloadError, match=r"holds '\.\./\.\./escaped\.txt', a path outside its folder"):
        fetch_dataset(spec, url=f"{base}/evil.zip", progress=False)
    _zip(tmp_path / "www" / "other.zip", {"something/else.jpg": b"x"})
    with pytest.raises(DownloadError, match="has no coco128/images/train2017/ folder"):
        fetch_dataset(dataclasses.replace(spec), url=f"{base}/other.zip", progress=False)
    (tmp_path / "www" / "cut.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DownloadError, match="not a complete zip archive"):
        fetch_dataset(spec, url=f"{base}/cut.zip", progress=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half unpacked, no archive left
