"""Rules the suite keeps about itself, read from its own source (tests/*.py) with ``ast``.

- Every process a test starts is bounded: ``subprocess.run``/``check_output``/``check_call``/``call`` get a
  ``timeout``, and every ``.wait()``/``.communicate()`` does too (pytest-timeout ends a hung test at 900 s, but a
  child that never exits should fail its own test in the minutes it was given).
- No model is exported twice for the same thing: tests take exported folders from the session's export cache
  (``tests/export_cache.py``); an ``export_*`` call inside a test is allowed only where the export itself, or its
  failure, is what the test checks (listed below with the reason).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BOUNDED = {"run", "check_output", "check_call", "call"}
EXPORTS = {  # segedge's export entry points (a whole folder, or one traced graph)
    "export_fastsam",
    "export_sam",
    "export_sam2",
    "export_clip",
    "export_hq_sam",
    "export_efficientvit_sam",
    "export_yolo",
    "export_graph",
}
WAITS = {"wait", "communicate"}

# test file -> why it calls an export function itself (not through the export cache)
EXPORTS_ALLOWED = {
    "test_export_errors.py": "export's refusals and a failed export leaving nothing",
    "test_sam_parity.py": "MobileSAM's folder (module fixture), the refusals, the heavy ViT-B real shapes",
    "test_clip.py": "export's refusal of a non-CLIP checkpoint",
    "test_sam2.py": "SAM 2.0 tiny and 2.1 small (heavy) image-only exports (one each), export's refusals",
    "test_efficientvit_sam.py": "EfficientViT-SAM's folder (module fixture)",
    "test_hq_sam.py": "HQ-SAM's folders (module fixture)",
    "test_large_graphs.py": "graphs forced to external data, a graph above 2 GiB (heavy)",
    "test_fastsam_parity.py": "the ultralytics output layout (an export option nothing else uses)",
    "test_quantize.py": "the channels_last layout at 256 (decoding nodes kept float)",
    "test_export_slim.py": "export_graph through the cheap slimming path",
    "test_export_child.py": "export_graph of a 134 MB MLP in the exporting process and in a child, compared",
    "test_yolo.py": "export fastsam's refusal of a YOLO26 checkpoint that kept only its end-to-end head",
}


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            yield node


def _name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id


def test_every_process_a_test_starts_is_bounded():
    unbounded, checked = [], 0
    for path in sorted(TESTS.glob("*.py")):
        for call in _calls(path):
            func = call.func
            is_subprocess = (
                isinstance(func, ast.Attribute)
                and func.attr in BOUNDED
                and isinstance(func.value, ast.Name)
                and func.value.id == "subprocess"
            )
            receiver = ast.unparse(func.value).lower() if isinstance(func, ast.Attribute) else ""
            # a process's wait/communicate (a threading.Barrier or Event waits on threads, not on a process)
            is_wait = isinstance(func, ast.Attribute) and func.attr in WAITS and "barrier" not in receiver
            is_wait = is_wait and "event" not in receiver
            if not (is_subprocess or is_wait):
                continue
            checked += 1
            has_timeout = any(k.arg == "timeout" for k in call.keywords) or (is_wait and call.args)
            has_timeout = has_timeout or any(k.arg is None for k in call.keywords)  # **kwargs: assumed to carry it
            if not has_timeout:
                unbounded.append(f"{path.name}:{call.lineno} {_name(call)}()")
    assert checked >= 30, checked  # the rule read the suite's process starts, not nothing
    assert not unbounded, f"give these a timeout: {unbounded}"


def test_exports_come_from_the_cache():
    stray, seen, exporting = [], 0, set()
    for path in sorted(TESTS.glob("*.py")):
        for call in _calls(path):
            name = _name(call)
            if name not in EXPORTS:
                continue
            seen += 1
            exporting.add(path.name)
            if path.name not in EXPORTS_ALLOWED:
                stray.append(f"{path.name}:{call.lineno} {name}()")
    assert seen >= 10, seen
    assert set(EXPORTS_ALLOWED) == exporting, set(EXPORTS_ALLOWED) ^ exporting  # the list says what is there
    assert not stray, f"take these folders from the export cache (tests/export_cache.py) or list why: {stray}"


def test_the_worker_plan_names_files_that_exist_and_groups_sam3():
    """tests/worker_plan.py: every file it times or groups exists (a renamed file would silently fall out of the plan:
    its SAM 3 tests back in parallel with the others'), the SAM 3 files form one work unit, and units go out longest
    first."""
    from worker_plan import SAME_WORKER, SECONDS, expected_seconds, longest_unit, work_unit

    named = set(SAME_WORKER) | set(SECONDS)
    missing = sorted(name for name in named if not (TESTS / name).is_file())
    assert not missing and len(named) >= 30, missing
    units = {work_unit(f"tests/{name}::test_x") for name in SAME_WORKER}
    assert units == {"sam3"}, units
    assert work_unit("tests/test_cli.py::test_x[a::b]") == "tests/test_cli.py"
    sam3 = [f"tests/{name}::t{i}" for name in SAME_WORKER for i in range(3)]  # three tests per file: counted once
    assert expected_seconds(sam3) == sum(SECONDS[name] for name in SAME_WORKER)
    assert expected_seconds(["tests/test_new.py::a", "tests/test_new.py::b"]) == 4.0
    queue = {  # many short tests (loadfile's first pick: the most tests) against few long ones
        "tests/test_new.py": {f"tests/test_new.py::t{i}": False for i in range(50)},
        "sam3": {nodeid: False for nodeid in sam3},
        "tests/test_cli.py": {"tests/test_cli.py::a": False},
    }
    assert longest_unit(queue) == "sam3"
    del queue["sam3"]
    assert longest_unit(queue) == "tests/test_new.py"  # 100 s by its count, against test_cli's measured seconds
