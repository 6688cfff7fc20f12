"""Argument types and options shared by the ``segedge`` commands (no heavy imports: ``--help`` stays fast)."""

from __future__ import annotations

import argparse
import math
import re

from segedge.image_formats import READ_EXTENSIONS
from segedge.precisions import CHOICES as PRECISION_CHOICES
from segedge.precisions import MIN_HELD_OUT_IMAGES  # noqa: F401  (quantize's --min-held-out default)

IMAGE_SUFFIXES = frozenset(READ_EXTENSIONS)  # image files taken from a folder


def point_type(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1]), 1
        if len(parts) == 3 and parts[2].strip() in ("0", "1"):
            return float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected X,Y or X,Y,LABEL with LABEL 1 or 0, got {text!r}")


def box_type(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        if len(parts) == 4:
            return tuple(float(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected X1,Y1,X2,Y2, got {text!r}")


def fraction_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value

    return parse


positive_int = whole_number(1)


def finite_float(text: str) -> float:
    """An argparse type: any finite number."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def csv_choices(choices: tuple[str, ...]):
    """An argparse type: a comma-separated list of ``choices`` (duplicates dropped, order kept)."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        wrong = [t for t in items if t not in choices]
        if wrong or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return list(dict.fromkeys(items))

    return parse


def pixel_count(text: str) -> int:
    try:
        value = int(float(text)) if re.fullmatch(r"\d+(\.\d*)?(e\d+)?", text.strip(), re.I) else -1
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels (e.g. 100000000 or 1e8; 0 = no limit), got {text!r}"
        )
    return value


_NUMBERS = re.compile(r"^-[\d.]+(e[-+]?\d+)?(,\s*-?[\d.]+(e[-+]?\d+)?)+$", re.I)


def join_negative_values(argv: list[str]) -> list[str]:
    """``--point -1,10`` as ``--point=-1,10``: argparse would read ``-1,10`` as an unknown option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--point", "--box") and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


class Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped option (``--piont`` -> ``did you mean --point?``), drawn from the
    options of the command given (``segedge val --model x``: ``--model`` is not one of val's)."""

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(args) if args is not None else []
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        import difflib

        if message.startswith("unrecognized arguments:"):
            command = _command(self, getattr(self, "_argv", []))
            known = sorted(_option_strings(command or self))
            elsewhere = _option_strings(self)
            hints = []
            for word in message.split(":", 1)[1].split():
                if not word.startswith("--"):
                    continue
                option = word.split("=", 1)[0]
                close = difflib.get_close_matches(option, [k for k in known if k != "--help"], n=1, cutoff=0.6)
                if command is not None and option in elsewhere:
                    hints.append(f"{option} is not an option of {command.prog}: see {command.prog} -h")
                elif close:
                    hints.append(f"{word}: did you mean {close[0]}?")
            if hints:
                message = f"{message} ({'; '.join(hints)})"
        super().error(message)


def _command(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser | None:
    """The subcommand's parser ``argv`` names (its first word that is one), else None."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in argv:
                if word in action.choices:
                    return action.choices[word]
    return None


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every ``--option`` of ``parser`` and of its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


# -- options several commands share, defined once --------------------------------------------------------
BACKEND_CHOICES = ("openvino", "onnxruntime")
PRECISION_HELP = (
    "auto (default): the folder's gated int8 (unless quantize measured it slower on this kind of CPU), else bf16 "
    "where the CPU runs it natively (AMX, AVX512_BF16) and passed its gate, else f32; f32 matches PyTorch; "
    "`segedge info` shows what auto picks here"
)


def add_runtime_options(
    parser: argparse.ArgumentParser,
    *,
    threads_help: str = "inference threads (default: all cores)",
    precision_help: str = PRECISION_HELP,
) -> None:
    """``--backend``, ``--precision`` and ``--threads``: how a command runs a model folder."""
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default=None, help="default: openvino if installed, else onnxruntime"
    )
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto", help=precision_help)
    parser.add_argument("--threads", type=positive_int, default=None, help=threads_help)


def add_prompt_options(parser: argparse.ArgumentParser, *, every_image: bool = False) -> None:
    """``--point X,Y[,LABEL]`` and ``--box X1,Y1,X2,Y2`` (repeatable), in original-image pixels."""
    scope = " for every image" if every_image else ""
    parser.add_argument(
        "--point",
        type=point_type,
        action="append",
        metavar="X,Y[,LABEL]",
        help=f"point prompt in original pixels{scope}; LABEL 1 = object (default), 0 = background; repeatable",
    )
    parser.add_argument(
        "--box",
        type=box_type,
        action="append",
        metavar="X1,Y1,X2,Y2",
        help=f"box prompt in original pixels{scope}; repeatable",
    )


def add_export_options(parser: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """What every ``segedge export FAMILY`` takes: ``--checkpoint``, ``--out``, ``--overwrite``, ``--no-simplify``."""
    parser.add_argument("--checkpoint", required=True, help=checkpoint_help)
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
