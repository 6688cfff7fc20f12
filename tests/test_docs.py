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
