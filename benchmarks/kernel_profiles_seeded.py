"""OpenVINO kernel profiles (the reference kernels' share, issue 42) of families at their real shapes, seeded weights.

    python benchmarks/kernel_profiles_seeded.py [--work /tmp/kernel-profiles] [--threads 1 2] [--runs 3]
        [--out benchmarks/results/kernel_profiles_seeded_<kind>.md]

Builds each checkpoint with the official package (``efficientsam``, ``segment_anything_hq``, ``open_clip``, ``ultralytics``' YOLOE yaml files: the
test suite's seeded builders in ``tests/helpers.py``; kernels and times do not depend on the weights' values),
exports it with segedge (kept in ``--work``: a rerun profiles only), and prints what ``segedge bench --model DIR
--kernels`` prints, once per thread count: every graph's wall time, its costliest kernels and the ``ref_*`` share.
Needs the export extra and the test packages (``scripts/test.sh`` installs them). ``tests/test_kernels.py`` holds
MobileSAM, SAM 2.1 and SAM 3 to the 1% bound; this covers the families it does not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
SHARED = Path(__file__).resolve().parents[2] / "shared"


def families(work: Path) -> dict:
    """``{name: export(out_dir)}``, each building its seeded checkpoint in ``work`` first when it is not there."""
    import helpers
    from segedge.export.clip import export_clip
    from segedge.export.efficientvit_sam import export_efficientvit_sam
    from segedge.export.hq_sam import export_hq_sam

    def seeded(checkpoint: str, make, export_checkpoint):
        """``export_checkpoint(work / checkpoint, out)``, ``make(path)`` building that checkpoint first (once)."""

        def export(out):
            ckpt = work / checkpoint
            if not ckpt.is_file():
                make(ckpt)
            return export_checkpoint(ckpt, out)

        return export

    def yoloe(yaml):
        def export(out):
            from segedge.export.yoloe import export_yoloe
            from yoloe_helpers import make_text_encoder, make_yoloe_checkpoint

            text = work / "mobileclip_blt.ts"
            if not text.is_file():
                make_text_encoder(text)
            ckpt = work / yaml.replace(".yaml", ".pt")
            if not ckpt.is_file():
                make_yoloe_checkpoint(ckpt, yaml, sorted((SHARED / "images").glob("*.jpg")), text)
            return export_yoloe(ckpt, out, text_encoder=str(text))

        return export

    return {
        "efficientvit_sam_l0": seeded(
            "efficientvit-sam-l0.pt",
            lambda path: helpers.make_efficientvit_sam_checkpoint(path, "l0"),
            export_efficientvit_sam,
        ),
        "hq_sam_light": seeded(
            "hq-sam-light.pt",
            lambda path: helpers.make_hq_sam_checkpoint(path, "light"),
            export_hq_sam,
        ),
        "clip_vit_b32": seeded("clip-vit-b32.pt", helpers.make_clip_checkpoint, export_clip),
        "yoloe_11n_seg": yoloe("yoloe-11n-seg.yaml"),
        "yoloe_26n_seg": yoloe("yoloe-26n-seg.yaml"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/kernel-profiles", help="checkpoints and exported folders")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=3, help="profiled runs per graph (each node's fastest counts)")
    parser.add_argument("--out", default=None, help="write the Markdown here too")
    args = parser.parse_args()
    from segedge.bench.kernels import markdown, profile_folder
    from segedge.bench.run import system_info, system_line

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections = [
        "# OpenVINO kernel profiles of seeded folders at their real shapes",
        "",
        f"`python benchmarks/kernel_profiles_seeded.py --threads {' '.join(map(str, args.threads))} --runs "
        f"{args.runs}`, f32, one family after another (wall times of different sections are not comparable; the "
        "ref_* share is a ratio within one profile).",
    ]
    for name, export in families(work).items():
        folder = work / name
        if not (folder / "segedge.json").is_file():
            t0 = time.perf_counter()
            export(folder)
            print(f"{name}: exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for threads in args.threads:
            profiles = profile_folder(folder, "f32", args.runs, threads)
            sections += ["", f"## {name}, {threads} thread(s)", "", markdown(profiles, system_line(system_info()))]
    text = "\n".join(sections) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
