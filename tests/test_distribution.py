"""`Segmenter` on every backend, and data-parallel training on two devices.

pytest runs this file on TensorFlow; tests/test_backends.py runs it again with KERAS_BACKEND=torch and
KERAS_BACKEND=jax, the JAX process with two virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2), where the data-parallel test must run.
"""
import os

import keras
import numpy as np
import pytest

from miscnn_lite.io import MiscnnError
from miscnn_lite.models import unet
from miscnn_lite.phantoms import toy_case
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.training import Segmenter

TRAIN = [toy_case(s) for s in range(2)]


def segmenter(**kw):
    return Segmenter(unet(3, depth=2, base_filters=4), Pipeline([ClipHU(-100, 400), ZScore("dataset")]),
                     patch_shape=(16, 16, 16), iterations=3, workers=1, seed=3, **kw)


def test_segmenter_trains_predicts_and_reloads_on_this_backend(tmp_path):
    seg = segmenter()
    log = seg.fit(TRAIN, None, epochs=2, out=tmp_path / "m", progress=False)
    assert log["epoch"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    case = toy_case(9)
    probs = seg.predict_probabilities(case)
    assert probs.shape == (*case.shape, 3)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-4)
    again = Segmenter.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_probabilities(case), probs, atol=1e-5)


def test_data_parallel_steps_equal_the_one_device_steps(tmp_path):
    if keras.backend.backend() != "jax":
        with pytest.raises(MiscnnError, match="KERAS_BACKEND=jax"):
            segmenter(strategy="data_parallel")
        return
    import jax
    if len(jax.devices()) < 2:
        assert os.environ.get("MISCNN_EXPECT_BACKEND") != "jax", "tests/test_backends.py must give JAX 2 devices"
        pytest.skip("one JAX device: set XLA_FLAGS=--xla_force_host_platform_device_count=2 before JAX starts")
    one = segmenter()
    log1 = one.fit(TRAIN, None, epochs=2, out=tmp_path / "one", progress=False)
    two = segmenter(strategy="data_parallel")
    log2 = two.fit(TRAIN, None, epochs=2, out=tmp_path / "two", progress=False)
    assert len(two.model.weights[0].value.sharding.device_set) == 2          # weights live on both devices
    np.testing.assert_allclose(log2["loss"], log1["loss"], rtol=1e-5)
    for a, b in zip(two.model.get_weights(), one.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(MiscnnError, match="batch_size=3: .* over 2 devices; choose a multiple of 2"):
        segmenter(strategy="data_parallel", batch_size=3)
