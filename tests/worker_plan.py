"""How the two pytest-xdist workers share the suite (scripts/test.sh: ``-n 2 --dist loadfile``).

pytest-xdist's ``loadfile`` hands each worker one test file at a time, the files with the most tests first. Two
things go wrong with that on a 2-core, 24 GB machine:

- **Memory.** The files that hold a seeded SAM 3 (several GB compiled, more while it is exported, quantized or
  served to Label Studio) could run at the same time in both workers; a worker killed by the kernel is replaced and
  its whole file re-run, which is how CI once ran past its 90 minutes. Files in one ``SAME_WORKER`` group form one
  work unit: they run one after the other in one worker.
- **The tail.** A long file with few tests (SAM 3's: 15 tests, minutes) was handed out last, and one worker ran it
  alone while the other idled. Work units go out longest first (``SECONDS``: measured seconds by file, from the
  summary's "time by test file" of a clean run; a file not listed counts 2 s per test).
"""

from __future__ import annotations

from pathlib import Path

from xdist.scheduler import LoadFileScheduling

# Files whose tests compile or export the seeded SAM 3: never two at once.
SAME_WORKER = {
    "test_sam3.py": "sam3",
    "test_label_studio_sam2_sam3.py": "sam3",
    "test_kernels.py": "sam3",
}
# Seconds by test file (setup + call + teardown; a wait for the other worker's export counts where it waited): only
# the order they give matters.
SECONDS = {  # a clean run of scripts/test.sh on the 2-core AVX2 EPYC, 2026-12-07 (81.5 summed minutes)
    "test_sam3.py": 711,
    "test_yoloe.py": 325,
    "test_quantize.py": 291,
    "test_sam2.py": 274,
    "test_edgetam.py": 269,
    "test_docs.py": 237,
    "test_clip.py": 212,
    "test_hq_sam.py": 208,
    "test_sam_parity.py": 170,
    "test_sam2_video.py": 164,
    "test_label_studio_sam2_sam3.py": 151,
    "test_yolo.py": 142,
    "test_efficientvit_sam.py": 123,
    "test_sam_generator.py": 120,
    "test_data.py": 117,
    "test_bench.py": 113,
    "test_val.py": 110,
    "test_kernels.py": 106,
    "test_concurrency.py": 98,
    "test_fastsam_parity.py": 91,
    "test_serve.py": 80,
    "test_sam_batch.py": 73,
    "test_large_graphs.py": 72,
    "test_int8_sam.py": 62,
    "test_reliability.py": 60,
    "test_label_studio.py": 59,
    "test_sam_split_decoder.py": 57,
    "test_cli_sam.py": 56,
    "test_stream.py": 51,
    "test_cli.py": 45,
    "test_serve_video.py": 42,
    "test_minimal_install.py": 36,
    "test_fuzz.py": 34,
    "test_serve_browser.py": 28,
    "test_import_without_torch.py": 20,
    "test_serve_cli.py": 14,
    "test_precision.py": 11,
    "test_ort_memory.py": 10,
    "test_interrupts.py": 10,
}
SECONDS_PER_UNLISTED_TEST = 2.0


def work_unit(nodeid: str) -> str:
    """The work unit of a test: its file, or the group its file shares a worker with."""
    file = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(Path(file).name, file)


def expected_seconds(nodeids: list[str]) -> float:
    """Seconds a work unit's tests are expected to take: its files' measured seconds, 2 s per test of a file not
    listed."""
    names = [Path(nodeid.split("::", 1)[0]).name for nodeid in nodeids]
    listed = sum(SECONDS[name] for name in set(names) if name in SECONDS)
    return listed + sum(name not in SECONDS for name in names) * SECONDS_PER_UNLISTED_TEST


def longest_unit(workqueue: dict[str, dict[str, bool]]) -> str:
    """The work unit to hand out next: the one expected to take longest (``workqueue``: unit -> {nodeid: done})."""
    return max(workqueue, key=lambda unit: expected_seconds(list(workqueue[unit])))


class PlannedFileScheduling(LoadFileScheduling):
    """``loadfile`` with the groups of ``SAME_WORKER`` and the longest work units handed out first."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)

    def _assign_work_unit(self, node) -> None:
        """Hand ``node`` the longest work unit left (``loadfile`` hands out the first in its queue)."""
        self.workqueue.move_to_end(longest_unit(self.workqueue), last=False)
        super()._assign_work_unit(node)
