"""Shared fixtures: paths to ../shared data, exported model folders (built once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import memory_watch

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("CI", "true")  # keeps OpenVINO / ultralytics telemetry off the network

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGEDGE_SHARED", ROOT.parent / "shared"))
REAL_CKPT = SHARED / "weights" / "yolov8n-seg-coco.pt"
IMAGES = SHARED / "images"
COCO = SHARED / "coco-mini"
SAM2_TEST_SIZE = 512  # the seeded SAM 2.1 tiny's image size (sam2_tiny_ckpt)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found: {path} (set SEGEDGE_SHARED to the shared/ folder)")
    return path


# What the CPU is and how many threads it runs come from the machine: emulation is per test (see ``emulate_cpu``)
ISOLATED_ENV = ("SEGEDGE_CPU_FLAGS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")
for _name in ISOLATED_ENV[:3]:
    if os.environ.pop(_name, None) is not None:
        print(f"tests/conftest.py: ignoring {_name} from the environment (tests emulate CPU kinds themselves)")
_ENV_AT_START = {name: os.environ.get(name) for name in ISOLATED_ENV}


@pytest.fixture(autouse=True)
def _isolate_global_state():
    """Every test starts with the process state the run started with, whatever ran before it in the random order:
    the CPU-kind and thread variables (ultralytics sets ``OMP_NUM_THREADS=1`` when first imported, and every later
    subprocess would inherit it), segedge's cached CPU flags, torch's grad mode and thread count (the video reference turns grad off for the
    process), and sam2's connected components (the video reference replaces them)."""
    import sys

    sam2_misc = sys.modules.get("sam2.utils.misc")
    components = getattr(sam2_misc, "get_connected_components", None)
    if components is not None and components.__module__ != "sam2.utils.misc":
        components = None  # already replaced: restore the package's own
    yield
    for name, value in _ENV_AT_START.items():
        if os.environ.get(name) != value:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    cpu = sys.modules.get("segedge.runtime.cpu")
    if cpu is not None:
        cpu._from_system.cache_clear()
    torch = sys.modules.get("torch")
    if torch is not None:  # grad on and one thread per core, whoever imported torch (ultralytics: one thread)
        torch.set_grad_enabled(True)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    sam2_misc = sys.modules.get("sam2.utils.misc")
    if sam2_misc is not None and sam2_misc.get_connected_components.__module__ != "sam2.utils.misc":
        sam2_misc.get_connected_components = components or _pristine("sam2.utils.misc", "get_connected_components")


def _pristine(module: str, name: str):
    """``module.name`` as the package defines it (a fresh execution of the module's source)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    return getattr(fresh, name)


@pytest.fixture
def emulate_cpu(monkeypatch):
    """``emulate_cpu(kind)``: this process and the processes it starts see a CPU of ``kind`` ("amx",
    "avx512_bf16", "vnni", "avx2_vnni", "plain"): segedge's flags (``SEGEDGE_CPU_FLAGS``) and, for OpenVINO and torch
    in new processes, oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA``; ATen's for avx2). A cap can only lower what
    the machine has: asking for a kind above it skips with the reason (SEGEDGE_REQUIRE_ALL lists such skips)."""
    from segedge.runtime import cpu as cpu_module

    def emulate(kind: str):
        flags, isa = EMULATED_CPUS[kind]
        real = cpu_module._from_system().flags or frozenset()
        if not set(flags.split()) <= real:
            pytest.skip(f"{CPU_KIND_SKIP} emulating {kind} needs {flags} (this CPU: {sorted(real & set(REPORTED))})")
        monkeypatch.setenv("SEGEDGE_CPU_FLAGS", flags)
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        if kind == "avx2_vnni":
            monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
        cpu_module._from_system.cache_clear()
        return cpu_module.cpu_capabilities()

    yield emulate
    cpu_module._from_system.cache_clear()


CPU_KIND_SKIP = "cpu kind:"  # the one skip SEGEDGE_REQUIRE_ALL lets through: no cap can add instructions
REPORTED = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
EMULATED_CPUS = {  # kind -> (the flags segedge sees, ONEDNN_MAX_CPU_ISA)
    "amx": ("avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", "AVX512_CORE_AMX"),
    "avx512_bf16": ("avx2 avx512f avx512_vnni avx512_bf16", "AVX512_CORE_BF16"),
    "vnni": ("avx2 avx512f avx512_vnni", "AVX512_CORE_VNNI"),
    "avx2_vnni": ("avx2 avx_vnni", "AVX2_VNNI"),
    "plain": ("avx2", "AVX2"),
}


@pytest.fixture(scope="session")
def shared_images() -> list[Path]:
    return sorted(_need(IMAGES).glob("*.jpg"))


@pytest.fixture(scope="session")
def bus(shared_images) -> Path:
    """ultralytics' bus photo, 810x1080."""
    return next(p for p in shared_images if p.name == "ultralytics_bus.jpg")


@pytest.fixture(scope="session")
def real_checkpoint() -> Path:
    return _need(REAL_CKPT)


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    return _need(COCO)


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("segedge")


@pytest.fixture(scope="session", autouse=True)
def ov_cache(session_tmp) -> Path:
    """Keep segedge's caches (OpenVINO's compiled models, ONNX Runtime's arena measurements) inside the test run,
    for every test: a run never reads or fills the user's ~/.cache/segedge."""
    path = session_tmp / "ov-cache"
    os.environ["SEGEDGE_CACHE_DIR"] = str(path)
    return path


def shared_exports_root(config) -> Path:
    """Where the run's exports go: beside the workers' own temporary folders (pytest-xdist gives each worker
    ``<run>/popen-gwN``), so that both workers share them; in one process, the run's temporary folder."""
    base = config._tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "segedge-exports"


@pytest.fixture(scope="session")
def export_cache(session_tmp, ov_cache, request):
    """One export per (checkpoint, options) for the whole run, shared by the workers (tests/export_cache.py); at the
    end every cached folder this worker used is re-hashed, so a test that wrote into a shared (hard-linked) file fails
    the run."""
    from export_cache import ExportCache

    cache = ExportCache(shared_exports_root(request.config))
    yield cache
    problems = cache.verify()
    assert not problems, f"a test changed a cached export in place: {problems}"


@pytest.fixture(scope="session")
def real_folder_640(real_checkpoint, export_cache) -> Path:
    """The real YOLOv8n-seg checkpoint exported at 640 (the size its quality is documented at)."""
    from segedge.export.fastsam import export_fastsam

    return export_cache.folder(export_fastsam, real_checkpoint, name="yolov8n-seg-640", imgsz=640)


@pytest.fixture(scope="session")
def real_640_f32_val(real_folder_640) -> dict:
    """``segedge val`` of :func:`real_folder_640` in f32 on coco128-seg, both backends (:func:`run_val`'s result),
    measured once: test_val holds it to ultralytics' own val, test_quantize holds the f32 quantize recorded to it."""
    from segedge.evaluation.val import run_val

    data = _need(SHARED / "coco128-seg" / "data.yaml")
    return run_val(real_folder_640, data, backends=["openvino", "onnxruntime"], precisions=["f32"], progress=False)


@pytest.fixture(scope="session")
def seeded_fastsam_s(session_tmp) -> Path:
    """A seeded one-class FastSAM-s checkpoint (YOLOv8s-seg, nc=1) in ultralytics' .pt format."""
    from helpers import make_fastsam_checkpoint

    return make_fastsam_checkpoint(session_tmp / "FastSAM-s-seeded.pt", scale="s", seed=0)


@pytest.fixture(scope="session")
def seeded_folder_1024(seeded_fastsam_s, export_cache) -> Path:
    from segedge.export.fastsam import export_fastsam

    return export_cache.folder(export_fastsam, seeded_fastsam_s, name="fastsam-s-seeded-1024", imgsz=1024)


@pytest.fixture(scope="session")
def sam_tiny_ckpt(session_tmp) -> Path:
    """A seeded reduced-ViT SAM checkpoint (segment-anything's state-dict format; fast to run)."""
    from helpers import make_sam_checkpoint

    return make_sam_checkpoint(session_tmp / "sam_tiny.pth", "tiny")


@pytest.fixture(scope="session")
def sam_tiny_folder(sam_tiny_ckpt, export_cache) -> Path:
    """The seeded reduced-ViT SAM with the optional batched decoder: what every test of that checkpoint's folder uses
    (quantize, bench and the CLI tests too: quantize leaves the batch graphs f32, bench times the others; one export
    instead of two). The export's defaults are exported by test_cli (through the CLI) and test_large_graphs."""
    from segedge.export.sam import export_sam

    return export_cache.folder(export_sam, sam_tiny_ckpt, name="sam-tiny", decoder_batch=16)


@pytest.fixture(scope="session")
def mobile_sam_ckpt(session_tmp) -> Path:
    """A seeded MobileSAM checkpoint (ultralytics' own builder, mobile_sam.pt's keys)."""
    from helpers import make_sam_checkpoint

    return make_sam_checkpoint(session_tmp / "mobile_sam.pt", "mobile")


@pytest.fixture(scope="session")
def mobile_sam_folder(mobile_sam_ckpt, export_cache) -> Path:
    from segedge.export.sam import export_sam

    return export_cache.folder(export_sam, mobile_sam_ckpt, name="mobile-sam", mobile=True)


@pytest.fixture(scope="session")
def sam3_ckpt(session_tmp, shared_images) -> Path:
    """A seeded reduced SAM 3 in the official checkpoint layout (tests/sam3_helpers.py), its scores calibrated on
    ultralytics' bus photo."""
    pytest.importorskip("sam3", reason="the SAM 3 reference needs the sam3 package (scripts/test.sh installs it)")
    from sam3_helpers import make_sam3_checkpoint

    bus = [p for p in shared_images if p.name == "ultralytics_bus.jpg"]
    return make_sam3_checkpoint(session_tmp / "sam3-seeded.pt", bus)


@pytest.fixture(scope="session")
def sam3_folder(sam3_ckpt, export_cache) -> Path:
    from segedge.export.sam3 import export_sam3

    return export_cache.folder(export_sam3, sam3_ckpt, name="sam3-seeded")


@pytest.fixture(scope="session")
def clip_ckpt(session_tmp) -> Path:
    """A seeded CLIP ViT-B/32 in OpenAI's TorchScript-archive format."""
    from helpers import make_clip_checkpoint

    return make_clip_checkpoint(session_tmp / "ViT-B-32.pt", "openai")


@pytest.fixture(scope="session")
def clip_folder(clip_ckpt, export_cache) -> Path:
    from segedge.export.clip import export_clip

    return export_cache.folder(export_clip, clip_ckpt, name="clip")


@pytest.fixture(scope="session")
def sam2_tiny_ckpt(session_tmp) -> Path:
    """A seeded SAM 2.1 Hiera-tiny checkpoint in the official format ({"model": state dict}), run at 512 pixels
    (``export sam2 --imgsz 512``; its references too): a frame costs a fifth of 1024's, and the SAM 2 tests are most
    of the suite's model time. SAM 2's own 1024 runs with ``scripts/test.sh --heavy`` (test_sam2.py)."""
    from helpers import make_sam2_checkpoint

    return make_sam2_checkpoint(session_tmp / "sam2.1_hiera_tiny_seeded.pt", "tiny", "2.1", image_size=SAM2_TEST_SIZE)


@pytest.fixture(scope="session")
def sam2_tiny_folder(sam2_tiny_ckpt, export_cache) -> Path:
    from segedge.export.sam2 import export_sam2

    return export_cache.folder(export_sam2, sam2_tiny_ckpt, name="sam2.1-tiny", image_size=SAM2_TEST_SIZE)


def pytest_sessionstart(session):
    memory_watch.start()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    memory_watch.on_test_start()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test file's last test (its module fixtures torn down): its freed memory goes back to the machine."""
    if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
        memory_watch.release_freed_memory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``SEGEDGE_REQUIRE_ALL=1`` (what ``scripts/test.sh`` sets, so CI) a skipped test fails: a suite that
    skips for a missing component (../shared, Chromium, a package) must not go green on what it did not run."""
    outcome = yield
    report = outcome.get_result()
    if call.when == "teardown":
        report.user_properties.extend(memory_watch.on_test_end())
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("SEGEDGE_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if CPU_KIND_SKIP in reason:  # a CPU kind no cap can reach here: stays a skip, listed by -ra
            return
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, but scripts/test.sh runs every test (SEGEDGE_REQUIRE_ALL=1): {reason}; install the "
            "missing component (scripts/test.sh does on a machine it can set up) or set SEGEDGE_REQUIRE_ALL=0"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (``pytest.importorskip`` of a missing package)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SEGEDGE_REQUIRE_ALL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped, but scripts/test.sh runs every test (SEGEDGE_REQUIRE_ALL=1): {reason}"
        )


def pytest_addoption(parser):
    parser.addoption(
        "--heavy",
        action="store_true",
        help="run only the tests marked heavy (real-shape graphs of minutes each; scripts/test.sh --heavy)",
    )


def pytest_collection_modifyitems(config, items):
    """``heavy`` tests (real shapes, > 2 GiB graphs) are not part of the default run (CI's): they are deselected, not
    skipped, and the terminal summary says how many; ``--heavy`` runs only them."""
    heavy = config.getoption("--heavy")
    keep = [item for item in items if (item.get_closest_marker("heavy") is not None) == heavy]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config._segedge_heavy_deselected = 0 if heavy else len(dropped)


def pytest_terminal_summary(terminalreporter, config):
    """The export bill, the heavy tests left out, the run's time by test file (setup + call + teardown) and the
    memory its tests took (memory_watch)."""
    by_file: dict[str, float] = {}
    teardowns = []  # they carry memory_watch's measures
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) in ("setup", "call", "teardown"):
                name = report.nodeid.split("::", 1)[0]
                by_file[name] = by_file.get(name, 0.0) + float(getattr(report, "duration", 0.0))
                if report.when == "teardown":
                    teardowns.append(report)
    if by_file:
        ranked = sorted(by_file.items(), key=lambda kv: -kv[1])
        terminalreporter.write_line(
            f"time by test file ({sum(by_file.values()) / 60:.1f} min in tests): "
            + ", ".join(f"{Path(name).name} {secs:.0f} s" for name, secs in ranked)
        )
    bill_file = shared_exports_root(config) / "bill.txt"  # every worker's exports (export_cache.py)
    if bill_file.exists():
        log = [(name, float(s)) for name, s in (line.split("\t") for line in bill_file.read_text().splitlines())]
        bill = ", ".join(f"{name} {s:.0f} s" for name, s in log)
        terminalreporter.write_line(f"export cache: {len(log)} shared exports, {sum(s for _, s in log):.0f} s ({bill})")
    for line in memory_watch.summary(teardowns):
        terminalreporter.write_line(line)
    count = getattr(config, "_segedge_heavy_deselected", 0)
    if count:
        terminalreporter.write_line(
            f"{count} heavy tests not run (real shapes; run them with: scripts/test.sh --heavy)"
        )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (scripts/test.sh) as planned in tests/worker_plan.py: the SAM 3 files in one worker, the
    longest files first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from worker_plan import PlannedFileScheduling

    return PlannedFileScheduling(config, log)
