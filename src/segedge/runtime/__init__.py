"""Run time: model folders on OpenVINO or ONNX Runtime, with NumPy pre/post-processing. Never imports torch."""

from segedge.runtime.backends import BACKENDS, Backend, installed_backends, open_backend
from segedge.runtime.clip import Clip
from segedge.runtime.fastsam import FastSam
from segedge.runtime.result import Result
from segedge.runtime.sam import Sam
from segedge.runtime.sam2 import Sam2

__all__ = ["BACKENDS", "Backend", "Clip", "FastSam", "Result", "Sam", "Sam2", "installed_backends", "open_backend"]
