"""`Segmenter` on every backend, and data-parallel training on two devices.

pytest runs this file on TensorFlow; tests/test_backends.py runs it again with KERAS_BACKEND=torch and
KERAS_BACKEND=jax, the JAX process with two virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2), where the data-parallel test must run.
"""
import json
import os
import warnings

import keras
import numpy as np
import pytest

from miscnn_lite.io import MiscnnError
from miscnn_lite.models import unet
from miscnn_lite.phantoms import toy_case
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.training import CHECKPOINT_DIR, Segmenter

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


def test_averaged_weights_are_the_moving_average_of_the_steps_on_this_backend(tmp_path):
    """`ema_momentum`: the model validated and kept is the moving average of the weights each step trained
    (NumPy by hand), on every backend; a run cut after one epoch and resumed ends with the uncut run's weights."""
    class RawWeights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = []

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables])

    class StopAfter1(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    raw, seg = RawWeights(), segmenter(ema_momentum=0.8)
    seg.fit(TRAIN, [toy_case(9)], epochs=1, out=tmp_path / "m", progress=False, callbacks=[raw])
    average = raw.steps[0]
    for step in raw.steps[1:]:
        average = [0.8 * a + 0.2 * w for a, w in zip(average, step)]
    assert len(raw.steps) == 3
    slots = seg.model.optimizer._model_variables_moving_average      # left holding the average, as Keras leaves them
    for v, a, s in zip(seg.model.trainable_variables, average, slots):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), a, atol=1e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(s), a, atol=1e-6)
    validated = Segmenter.load(tmp_path / "m", workers=1)            # best.keras -> model.keras: the average
    for v, a in zip(validated.model.trainable_variables, average):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), a, atol=1e-6)
    assert not np.allclose(average[0], raw.steps[-1][0], atol=1e-6)
    segmenter(ema_momentum=0.8).fit(TRAIN, None, epochs=2, out=tmp_path / "cut", callbacks=[StopAfter1()])
    state = json.loads((tmp_path / "cut" / CHECKPOINT_DIR / "state.json").read_text())
    assert state["callbacks"]["AveragedWeights"] == {"in_model": True}     # the checkpoint holds the average
    resumed = Segmenter.load(tmp_path / "cut", workers=1)
    with warnings.catch_warnings(record=True) as caught:        # Keras's warning of an unbuilt optimizer is not shown
        warnings.simplefilter("always")
        resumed.fit(TRAIN, None, epochs=2, out=tmp_path / "cut")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    whole = segmenter(ema_momentum=0.8)
    whole.fit(TRAIN, None, epochs=2, out=tmp_path / "whole")
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
