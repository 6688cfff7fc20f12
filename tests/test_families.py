"""The family registry: one entry per family the manifest knows, each resolving to real classes and
functions; one way to open any folder; no import circle in the package."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from segedge import families
from segedge.errors import ModelFolderError
from segedge.manifest import load_model_folder
from segedge.precisions import PRECISIONS
from segedge.runtime.model_base import FolderModel, open_model

PACKAGE = Path(families.__file__).parent


def test_every_family_resolves_to_its_own_classes_and_functions():
    from segedge.manifest import FAMILIES

    assert FAMILIES == families.FAMILY_NAMES == ("sam", "sam2", "sam3", "fastsam", "yolo", "yoloe", "clip")
    for name, spec in families.FAMILIES.items():
        cls = spec.model_class()
        assert issubclass(cls, FolderModel) and cls.FAMILY == name
        assert all(callable(f) for f in spec.export_functions())
        # every family quantize runs has a recipe and calibration inputs
        assert ("quantize" in spec.commands) == (spec.quantize_recipe is not None) and callable(spec.recipe_function())
        assert callable(spec.calibration_function())
        assert spec.exports and all(families.EXPORTS[e.name] is e for e in spec.exports)
        assert spec.agreement in ("mask_iou", "embedding_cosine")
        assert set(spec.prompts) <= {"point", "box", "text"}
    with pytest.raises(
        ModelFolderError, match=r"unknown model family 'sam4' \(known: sam, sam2, sam3, fastsam, yolo, yoloe, clip\)"
    ):
        families.family("sam4")


def test_rules_live_in_the_registry():
    """SAM 2's generator default and its missing small-region removal, read by the generator, the CLI and
    the server from one place."""
    sam, sam2 = families.family("sam"), families.family("sam2")
    assert sam.everything_defaults["pred_iou_thresh"] == 0.88 and sam2.everything_defaults["pred_iou_thresh"] == 0.8
    assert sam.min_region_area and not sam2.min_region_area
    assert families.family("fastsam").everything and not families.family("fastsam").promptable
    assert not families.family("clip").segments_images


def test_open_model_opens_each_family_with_its_class(real_folder_640, sam_tiny_folder, clip_folder):
    from segedge import Clip, FastSam, Sam

    for folder, cls in ((real_folder_640, FastSam), (sam_tiny_folder, Sam), (clip_folder, Clip)):
        model = open_model(folder, "onnxruntime", precision="f32")
        assert type(model) is cls and model.precision == "f32" and model.backend_name == "onnxruntime"
    loaded = load_model_folder(real_folder_640)
    assert open_model(loaded, "openvino", precision="f32", verify=True).folder is loaded


def _imports(path: Path) -> set[str]:
    """segedge modules ``path`` imports anywhere in it (module level or inside functions)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: relative import (the package imports by absolute name)"
            name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {n for n in found if n.startswith("segedge")}


def test_no_import_circle_in_the_package():
    """Counting imports inside functions too: a lazy import still makes two modules depend on each other
    (runtime/model_base.py imported its own subclasses, which import it)."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph = {m: {i for i in _imports(p) if i in modules and i != m and i != "segedge"} for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)
    # and the layers: runtime never reaches up into bench, export, serve or the CLI; export not into bench
    upward = {
        (m, i)
        for m, deps in graph.items()
        for i in deps
        if (
            m.startswith("segedge.runtime")
            and i.startswith(("segedge.bench", "segedge.export", "segedge.serve", "segedge.cli"))
        )
        or (m.startswith(("segedge.export", "segedge.evaluation")) and i.startswith("segedge.bench"))
    }
    assert not upward, upward


def test_the_command_line_imports_nothing_heavy_until_a_command_runs():
    """`segedge --help` and argument errors: no torch, no backend, no OpenCV or NumPy imported."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom segedge.cli import build_parser\nbuild_parser().format_help()\n"
        "heavy = {'torch', 'cv2', 'numpy', 'openvino', 'onnxruntime'} & set(sys.modules)\nprint(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_family_names_are_compared_only_in_the_registry():
    """Issue 39: what differs between families is read from their entries. Outside families.py no code compares a
    family or export name (``family == "sam2"``, ``in ("sam", "sam2")``), no code asks ``isinstance`` of a runtime
    model class (the registry's capabilities say what a model can do), and the page's scripts name no family.
    The scan must see the comparisons it forbids: it finds them in a sample written the old way."""
    names = set(families.FAMILIES) | set(families.EXPORTS)
    quoted = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    compared = re.compile(
        rf"""(==|!=|\bin)\s*\(?\s*["']({quoted})["']|["']({quoted})["']\s*(==|!=)|\bin\s*\(\s*["'][^)]*["']({quoted})["']"""
    )
    classes = "|".join(spec.runtime.split(":")[1] for spec in families.FAMILIES.values())
    asked = re.compile(rf"isinstance\([^)]*\b({classes}|Sam2Video)\b")
    sample = 'if args.family == "fastsam":\n    x = family in ("sam", "sam2")\nif isinstance(model, FastSam): pass\n'
    assert len(compared.findall(sample)) == 2 and len(asked.findall(sample)) == 1
    found = []
    scanned = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "families.py":
            continue
        scanned += 1
        own = path.stem.lower()  # a runtime class may ask about itself (Sam2Video about Sam2Video)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if compared.search(code) or any(
                m.group(1).lower().replace("_", "") != own.replace("_", "") for m in asked.finditer(code)
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    scripts = sorted((PACKAGE / "serve" / "static").glob("*.js"))
    assert scanned > 100 and len(scripts) >= 2
    for path in scripts:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(rf"""["'`]({quoted})["'`]""", line):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def _precision_literals(source: str) -> list[int]:
    """Lines where a string token is exactly a precision name ("int8", "bf16", "f32"; docstrings are longer tokens)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.start[0] for t in tokens if t.type == tokenize.STRING and t.string.strip("'\"") in PRECISIONS]


def test_the_precision_vocabulary_is_written_in_one_module():
    """Issue 39: "int8", "bf16" and "f32" are written in segedge.precisions; everything else names its constants.
    The one exception is OpenVINO's own hint vocabulary, which happens to spell them the same."""
    sample = 'if precision == "int8":\n    """a docstring about "int8" and "bf16" precisions"""\nx = {"f32": 1}\n'
    assert _precision_literals(sample) == [1, 3]
    found, scanned = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "precisions.py":
            continue
        scanned += 1
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for number in _precision_literals(source):
            if "INFERENCE_PRECISION_HINT" not in lines[number - 1]:
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {lines[number - 1].strip()}")
    assert scanned > 100
    assert not found, "\n".join(found)


def test_modules_and_functions_stay_short():
    """Issue 39's house rule: no module of the package over 450 lines, no function over 100 (ruff's C901 checks
    branches; this checks length, which C901 does not)."""
    long_modules, long_functions, functions = [], [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 450:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions += 1
                if node.end_lineno - node.lineno + 1 > 100:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert functions > 500
    assert not long_modules and not long_functions, long_modules + long_functions
