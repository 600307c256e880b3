"""The model, loss and training tests again on other Keras backends, each in a fresh subprocess.

KERAS_BACKEND must be set before keras is first imported, and this pytest process has already
imported it with the default (TensorFlow) backend, so each backend gets its own interpreter.
`MISCNN_EXPECT_BACKEND` makes tests/test_models.py check that the subprocess really uses it. JAX gets two
virtual CPU devices, on which tests/test_distribution.py trains data-parallel.

On JAX most of the run is XLA compiling each tiny model's train step (8 s for a depth-2 2D U-Net),
not running it. Two compiler options halve that without changing what is computed: LLVM at -O0
(`--xla_backend_optimization_level=0`) and the default instead of the concurrency-optimised
instruction scheduler. These tests check values, not speed.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ["tests/test_models.py", "tests/test_losses.py", "tests/test_distribution.py"]


def run_tests_on(backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "MISCNN_EXPECT_BACKEND": backend,
           "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
                            " --xla_backend_optimization_level=0"
                            " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()
    cmd = [sys.executable, "-m", "pytest", *FILES, "-q", "-x", "-p", "no:cacheprovider", "-W",
           "ignore::DeprecationWarning"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_models_losses_and_training_on_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed here (pip install {backend} to run these tests on it)")
    proc = run_tests_on(backend)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"tests failed on KERAS_BACKEND={backend}:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
