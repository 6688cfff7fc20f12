"""The documentation: the site builds with no broken link, and every `segedge` command in the README and
docs/ parses with today's command line (a renamed or removed option fails here, not for a reader)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def test_the_site_builds_strictly(tmp_path):
    """mkdocs --strict: a link to a missing page or anchor, or a page left out of the nav, fails."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").is_file()


def _commands(text: str):
    """``segedge ...`` command lines of the bash blocks in ``text`` (continuations joined, comments, pipes and
    redirections cut)."""
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for stop in ("|", "&&", ">", "2>", ";", "&"):  # the command ends at a pipe or redirection
                words = words[: words.index(stop)] if stop in words else words
            while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
                words = words[1:]
            if words and Path(words[0]).name == "segedge":
                yield words[1:]


def _all_commands():
    return [(page.relative_to(ROOT).as_posix(), args) for page in PAGES for args in _commands(page.read_text())]


def test_the_docs_have_commands_to_check():
    commands = _all_commands()
    assert len(commands) >= 35 and sum(_is_synopsis(args) for _, args in commands) >= 10


def _is_synopsis(args: list[str]) -> bool:
    """A synopsis (``[--opt N]``, ``A|B``, ``INPUT...``) rather than a command to run."""
    return any("[" in a or a.endswith("...") for a in args)


def _subcommand(parser, args: list[str]):
    """The (sub)parser that ``args`` select, and the options it takes."""
    import argparse

    while True:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if not choices or not args or args[0] not in choices:
            return parser, {o for a in parser._actions for o in a.option_strings}
        parser, args = choices[args[0]], args[1:]


@pytest.mark.parametrize("page,args", _all_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_every_documented_command_parses(page, args):
    """A command is parsed as the CLI would; a synopsis must name only options its command has."""
    from segedge.cli import build_parser
    from segedge.cli.options import join_negative_values

    parser = build_parser()
    if _is_synopsis(args):
        _, known = _subcommand(parser, args)
        named = {m for a in args for m in re.findall(r"--[a-z][a-z0-9-]*", a)}
        assert named <= known, (
            f"{page}: `segedge {' '.join(args)}` names {sorted(named - known)}, which it does not take"
        )
        return
    try:
        parser.parse_args(join_negative_values(args))
    except SystemExit as exc:
        if exc.code:  # --help / --version exit 0
            pytest.fail(f"{page}: `segedge {' '.join(args)}` does not parse with today's CLI")


SKIP_MARK = "<!-- docs-test: skip"  # written on the line before a block that cannot run here, with the reason


def _python_blocks(text: str) -> list[str]:
    """The page's python blocks, in order, but those marked with SKIP_MARK on the line before."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "python":
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not before.startswith(SKIP_MARK):
            blocks.append(match.group(2))
    return blocks


PYTHON_PAGES = [page for page in PAGES if _python_blocks(page.read_text())]


def test_the_docs_have_python_to_run():
    assert {p.name for p in PYTHON_PAGES} >= {"README.md", "python-api.md", "sam2.md"}


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: p.name)
def test_python_blocks_run(
    page, tmp_path, monkeypatch, bus, real_folder_640, sam_tiny_folder, clip_folder, sam2_tiny_folder
):
    """Every python block of a page runs, in order and in one namespace (as a reader would paste them), in a
    folder where the names the docs use exist: ``models/fastsam`` (the real YOLOv8n-seg checkpoint),
    ``models/mobile_sam``, ``models/clip`` and ``models/sam2.1_tiny`` (seeded checkpoints of those
    architectures) and ``photo.jpg`` (the bus photo, 810x1080)."""
    models = tmp_path / "models"
    models.mkdir()
    for name, folder in (
        ("fastsam", real_folder_640),
        ("mobile_sam", sam_tiny_folder),
        ("clip", clip_folder),
        ("sam2.1_tiny", sam2_tiny_folder),
    ):
        (models / name).symlink_to(folder, target_is_directory=True)
    (tmp_path / "photo.jpg").write_bytes(bus.read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(_python_blocks(page.read_text())):
        try:
            exec(compile(block, f"{page.name}, python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # the block and the line in the failure message
            raise AssertionError(f"{page.name}, python block {i + 1} fails: {type(exc).__name__}: {exc}") from exc
