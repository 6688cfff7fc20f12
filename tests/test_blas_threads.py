"""NumPy's BLAS runs on one thread once a segedge model is loaded (runtime/blas_threads.py says why),
in every thread of the process; SEGEDGE_BLAS_THREADS changes or keeps it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from segedge.errors import SegedgeError
from segedge.runtime.blas_threads import ENV, blas_thread_setting

PROBE = """
import json, sys, threading
import numpy as np
from threadpoolctl import ThreadpoolController
def threads():
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]
before = threads()
from segedge import FastSam
model = FastSam(sys.argv[1], backend="openvino", precision="f32")
seen = {}
worker = threading.Thread(target=lambda: seen.update(worker=threads()))
worker.start(); worker.join()
print(json.dumps({"before": before, "after": threads(), "worker": seen["worker"]}))
"""


def _probe(folder, value=None) -> dict:
    env = dict(os.environ, CI="true")
    # ultralytics (imported by other tests) sets OMP_NUM_THREADS=1, which OpenBLAS obeys at load
    for name in (ENV, "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    if value is not None:
        env[ENV] = value
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_setting_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert blas_thread_setting() == 1
    for value, expected in (("2", 2), ("keep", None), ("KEEP", None), (" 1 ", 1)):
        monkeypatch.setenv(ENV, value)
        assert blas_thread_setting() == expected
    for bad in ("0", "-1", "many"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(
            SegedgeError, match=r"SEGEDGE_BLAS_THREADS must be a thread count \(1, 2, \.\.\.\) or 'keep'"
        ):
            blas_thread_setting()


def test_loading_a_model_sets_one_blas_thread_for_every_thread(real_folder_640):
    out = _probe(real_folder_640)
    if max(out["before"], default=1) < 2:
        pytest.skip(f"BLAS runs on one thread here anyway: {out}")
    assert set(out["after"]) == {1} and set(out["worker"]) == {1}, out
    assert set(_probe(real_folder_640, "keep")["after"]) == set(out["before"])  # (OpenCV brings its own OpenBLAS)
    two = _probe(real_folder_640, "2")
    assert set(two["after"]) == {2} and set(two["worker"]) == {2}, two
