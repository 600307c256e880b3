"""Model builders of miscnn_lite.models: shapes, parameter counts, training, saving, contracts.

Backend-agnostic: tests/test_backends.py runs this file again with KERAS_BACKEND=torch and =jax.
Tiny networks only (base filters <= 8, depth <= 3, patches <= 32^3).
"""
import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from miscnn_lite.losses import CrossEntropyLoss
from miscnn_lite.models import (
    ShuffleConv3DTranspose,
    SliceConv3D,
    average_ensemble,
    channels_first_call,
    check_model,
    dense_unet,
    downsampling_factor,
    load_model,
    msd_net,
    nnunet_like,
    residual_unet,
    stacking_ensemble,
    standard_unet,
    unet,
)


def CE():
    """Cross-entropy for integer label maps. Keras's own sparse_categorical_crossentropy fails in the
    backward pass on the torch backend for (B, H, W, C) outputs ('grad_input must be contiguous')."""
    return CrossEntropyLoss()


def np_(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def test_backend_is_the_requested_one():
    expected = os.environ.get("MISCNN_EXPECT_BACKEND")
    if expected:
        assert keras.backend.backend() == expected


def test_jax_draws_weights_with_the_classic_threefry():
    from miscnn_lite.models import use_classic_threefry
    if keras.backend.backend() != "jax":                  # tests/test_backends.py runs this file on JAX too
        assert use_classic_threefry() is False
        return
    import jax
    assert jax.config.jax_threefry_partitionable is ("JAX_THREEFRY_PARTITIONABLE" in os.environ and
                                                     jax.config.jax_threefry_partitionable)


# ---------------------------------------------------------------- parameter counts

def unet_param_count(n_classes, c_in, filters, k=27, bn=True):
    """Hand count of a plain 2-conv U-Net with max-pooling and transposed convolutions (3D).

    conv k*cin*cout (+cout bias when no BN) ; BN 4*cout ; transpose 8*cin*cout + cout ; head cin*n + n."""
    def conv(ci, co):
        return k * ci * co + (4 * co if bn else co)
    total, prev = 0, c_in
    for f in filters:                                   # encoder + bottleneck
        total += conv(prev, f) + conv(f, f)
        prev = f
    for f in reversed(filters[:-1]):                    # decoder
        total += 8 * prev * f + f                       # transposed conv 2x2x2
        total += conv(2 * f, f) + conv(f, f)
        prev = f
    return total + prev * n_classes + n_classes


def test_standard_unet_is_the_papers_22_6_million_parameters():
    model = standard_unet(n_classes=3)
    assert abs(model.count_params() - 22.6e6) < 0.1e6
    assert model.count_params() == unet_param_count(3, 1, [32, 64, 128, 256, 512])


@pytest.mark.parametrize("bn", [True, False])
def test_small_unet_matches_hand_count(bn):
    model = unet(2, in_channels=2, depth=2, base_filters=4, normalization="batch" if bn else "none")
    assert model.count_params() == unet_param_count(2, 2, [4, 8, 16], bn=bn)


def test_max_filters_caps_the_width():
    model = unet(3, depth=3, base_filters=8, max_filters=16)
    convs = [l for l in model.layers if isinstance(l, layers.Conv3D)]
    assert max(l.filters for l in convs) == 16


def test_presets_differ_in_their_building_blocks():
    kw = dict(depth=2, base_filters=4)
    nn = nnunet_like(**kw)
    names = {type(l).__name__ for l in nn.layers}
    assert "GroupNormalization" in names and "LeakyReLU" in names and "MaxPooling3D" not in names
    assert any(isinstance(l, layers.Add) for l in residual_unet(**kw).layers)
    assert residual_unet(**kw).count_params() > standard_unet(**kw).count_params()
    assert dense_unet(**kw).count_params() > standard_unet(**kw).count_params()
    leaky = [l for l in nn.layers if isinstance(l, layers.LeakyReLU)][0]
    assert leaky.negative_slope == pytest.approx(0.01)


# ---------------------------------------------------------------- every option builds and runs

BLOCK_NORM = list(itertools.product(("plain", "residual", "dense"), ("batch", "instance", "none")))
OPTIONS = ([(2, b, n, u, d) for (b, n), (u, d) in itertools.product(BLOCK_NORM, (("transpose", "maxpool"),
                                                                                  ("upsample", "strided")))]
           + [(3, b, n, ("transpose", "upsample")[i % 2], ("maxpool", "strided")[i // 2 % 2])
              for i, (b, n) in enumerate(BLOCK_NORM)])


@pytest.mark.parametrize("ndim,block,norm,up,down", OPTIONS)
def test_unet_options_map_patch_to_probabilities(ndim, block, norm, up, down):
    model = unet(3, in_channels=2, ndim=ndim, depth=2, base_filters=4, block=block, normalization=norm,
                 upsampling=up, downsampling=down)
    patch = (8, 12, 16)[:ndim] if ndim == 3 else (12, 16)
    out = np_(model(np.random.default_rng(0).normal(size=(2, *patch, 2)).astype("float32")))
    assert out.shape == (2, *patch, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    assert (out >= 0).all()
    assert downsampling_factor(model) == 4


def _weights_after_one_sgd_step(layer, x, target):
    inp = keras.Input(x.shape[1:])
    model = keras.Model(inp, layer(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.train_on_batch(x, target)
    return [np_(w) for w in model.get_weights()]


_PLAIN = (lambda: layers.Conv3D(4, 3, padding="same"), lambda: SliceConv3D(4, 3, padding="same"))
_STRIDED = (lambda: layers.Conv3D(4, 3, strides=2, padding="same", use_bias=False),
            lambda: SliceConv3D(4, 3, strides=2, padding="same", use_bias=False))


@pytest.mark.parametrize("native,ours,slices", [
    (*_PLAIN, None), (*_STRIDED, None),
    (lambda: layers.Conv3D(4, (1, 3, 3), dilation_rate=(1, 2, 2), padding="same"),
     lambda: SliceConv3D(4, (1, 3, 3), dilation_rate=(1, 2, 2), padding="same"), None),
    (lambda: layers.Conv3D(4, 3, padding="valid"), lambda: SliceConv3D(4, 3, padding="valid"), None),
    (lambda: layers.Conv3DTranspose(4, 2, strides=2), lambda: ShuffleConv3DTranspose(4, 2, strides=2), None),
    (lambda: layers.Conv3DTranspose(4, 3, strides=2, padding="same"),
     lambda: ShuffleConv3DTranspose(4, 3, strides=2, padding="same"), None),
    (*_PLAIN, True), (*_STRIDED, True),          # the slices forced, where the route may take Keras's Conv3D
], ids=["3x3x3", "strided", "dilated", "valid", "transposed2x2x2", "transposed3x3x3", "3x3x3-slices",
        "strided-slices"])
def test_3d_layers_equal_keras_layers_on_this_backend(native, ours, slices):
    """The 3D layers the U-Nets use compute Keras's Conv3D / Conv3DTranspose on every backend (TensorFlow:
    slices where they are faster, or forced, and shuffles; torch: channels-first views): same outputs, same
    weights after one SGD step."""
    x = np.random.default_rng(0).normal(size=(2, 6, 10, 8, 3)).astype("float32")
    a, b = native(), ours()
    if isinstance(b, SliceConv3D): b.slices = slices
    a.build(x.shape); b.build(x.shape)
    b.set_weights(a.get_weights())
    out = np_(a(x))
    np.testing.assert_allclose(np_(b(x)), out, atol=1e-4)
    target = np.random.default_rng(1).normal(size=out.shape).astype("float32")
    for wa, wb in zip(_weights_after_one_sgd_step(a, x, target), _weights_after_one_sgd_step(b, x, target)):
        np.testing.assert_allclose(wb, wa, atol=1e-4)


@pytest.mark.parametrize("slices", [True, None], ids=["slices-forced", "route-as-chosen"])
def test_3d_layers_predict_volumes_of_several_sizes_in_one_traced_model(slices):
    """Keras retraces `predict` with unknown spatial sizes once a second size comes: every 3D layer (stride 1,
    dilated, strided, transposed) then computes with a depth it does not know, and gives the eager outputs."""
    x_in = keras.Input((None, None, None, 2))
    plain, dilated = SliceConv3D(3, 3, padding="same"), SliceConv3D(3, 3, padding="same", dilation_rate=2)
    strided, up = SliceConv3D(3, 3, strides=2, padding="same"), ShuffleConv3DTranspose(3, 2, strides=2)
    for layer in (plain, dilated, strided):
        layer.slices = slices
    model = keras.Model(x_in, up(strided(dilated(plain(x_in)))))
    rng = np.random.default_rng(0)
    for shape in [(4, 6, 8), (6, 4, 10), (2, 8, 6)]:
        x = rng.normal(size=(1, *shape, 2)).astype("float32")
        np.testing.assert_allclose(model.predict(x, verbose=0), np_(model(x)), atol=1e-5)


_ROUTE_PROBE = """
import tensorflow as tf
from miscnn_lite.models import SliceConv3D as S, _onednn_kernels
def traced(layer):                  # the convolution op a traced call of the layer holds
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 4, 6, 6, 2))).graph
    kinds = {op.type for op in graph.get_operations()} & {"Conv2D", "Conv3D"}
    return "+".join(sorted(kinds))
print(_onednn_kernels(), S(2, 3, strides=2, padding="same")._use_slices(), traced(S(2, 3, padding="same")),
      traced(S(2, 3, padding="same", dilation_rate=2)))
"""


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a choice between TensorFlow's kernels")
@pytest.mark.parametrize("flag,expected", [("0", "False True Conv2D Conv2D"), ("1", "True False Conv3D Conv2D")])
def test_slices_follow_tensorflows_onednn_switch(flag, expected):
    """`TF_ENABLE_ONEDNN_OPTS` switches TensorFlow's oneDNN kernels off (0) or on (1) for a process; SliceConv3D
    computes plain and strided convolutions as slices (2D convolutions in the traced graph) only without them,
    dilated ones as slices either way."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_ENABLE_ONEDNN_OPTS=flag, TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", _ROUTE_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = run.stdout.strip().split("\n")[-1]
    if flag == "1" and seen.startswith("False"):
        pytest.skip("this TensorFlow build has no oneDNN kernels to switch on")
    assert seen == expected


if keras.backend.backend() == "torch":      # collected only in the torch run of this file (tests/test_backends.py)
    def test_channels_first_call_hands_torch_a_view_of_the_input():
        "On torch (how the kit trains on a GPU) the op sees the input's own memory in channels_last_3d layout."
        import torch
        x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(2, 4, 6, 5, 3)).astype("float32"))
        seen = {}

        def spy(v, data_format):
            seen.update(shares_memory=v.data_ptr() == x.data_ptr(), layout=v.is_contiguous(
                memory_format=torch.channels_last_3d), shape=tuple(v.shape), format=data_format)
            return v * 2
        out = channels_first_call(spy, x)
        assert seen == {"shares_memory": True, "layout": True, "shape": (2, 3, 4, 6, 5), "format": "channels_first"}
        assert out.is_contiguous() and tuple(out.shape) == (2, 4, 6, 5, 3)
        np.testing.assert_array_equal(np_(out), 2 * np_(x))


def test_instance_norm_normalizes_each_sample_and_channel():
    x_in = keras.Input((None, None, None, 3))
    norm = layers.GroupNormalization(groups=-1, epsilon=1e-5)
    model = keras.Model(x_in, norm(x_in))
    x = np.random.default_rng(1).normal(3, 5, size=(2, 4, 5, 6, 3)).astype("float32")
    y = np_(model(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_dropout_only_active_in_training():
    model = unet(2, ndim=2, depth=1, base_filters=4, dropout=0.5)
    x = np.ones((1, 8, 8, 1), "float32")
    np.testing.assert_allclose(np_(model(x)), np_(model(x)))
    assert not np.allclose(np_(model(x, training=True)), np_(model(x, training=True)))


def test_deep_supervision_outputs_train_together():
    model = unet(3, ndim=3, depth=3, base_filters=4, deep_supervision=True)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 16, 3)] * 3
    y = np.random.default_rng(1).integers(0, 3, size=(2, 16, 16, 16, 1))
    model.compile("adam", loss=[CE(), CE(), CE()], loss_weights=[1, 0.5, 0.25])
    loss = model.fit(x, [y] * 3, batch_size=2, epochs=4, verbose=0).history["loss"]
    assert loss[-1] < loss[0]


def test_region_unet_learns_nested_regions_with_the_region_loss():
    """A U-Net with KiTS region outputs and the region loss learns 'kidney+tumor = image > 0, tumor = image > 1':
    the loss falls and most voxels get their class by argmax of the class probabilities."""
    from miscnn_lite.losses import RegionDiceCELoss
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
    y = ((x > 0).astype("int32") + (x > 1))
    keras.utils.set_random_seed(0)
    model = unet(3, ndim=2, depth=2, base_filters=4, normalization="instance", regions=[[1, 2], [2]])
    model.compile(keras.optimizers.Adam(0.01), loss=RegionDiceCELoss([[1, 2], [2]]))
    loss = model.fit(np.tile(x, (5, 1, 1, 1)), np.tile(y, (5, 1, 1, 1)), batch_size=4, epochs=12,
                     verbose=0).history["loss"]
    assert loss[-1] < 0.6 * loss[0]
    assert (np_(model(x)).argmax(-1) == y[..., 0]).mean() > 0.85


@pytest.mark.parametrize("block", ["plain", "residual", "dense"])
def test_tiny_unet_learns_a_threshold(block):
    """Gradients reach every layer: a few Adam steps fit 'label = image > 0'."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
    y = (x > 0).astype("int32")
    model = unet(2, ndim=2, depth=2, base_filters=4, block=block)
    model.compile(keras.optimizers.Adam(0.01), loss=CE())
    # 3 epochs of 5 steps; training-mode loss (batch norm uses batch statistics) per epoch
    loss = model.fit(np.tile(x, (5, 1, 1, 1)), np.tile(y, (5, 1, 1, 1)), batch_size=4, epochs=3,
                     verbose=0).history["loss"]
    assert loss[-1] < 0.8 * loss[0]


def test_bad_arguments_name_the_parameter():
    for kwargs, text in [(dict(n_classes=0), "n_classes=0"), (dict(n_classes=3, ndim=1), "ndim=1"),
                         (dict(n_classes=3, normalization="layer"), "normalization='layer'"),
                         (dict(n_classes=3, activation="gelu"), "activation='gelu'"),
                         (dict(n_classes=3, block="inception"), "block='inception'"),
                         (dict(n_classes=3, downsampling="avg"), "downsampling='avg'"),
                         (dict(n_classes=3, dropout=1.0), "dropout=1.0"),
                         (dict(n_classes=3, in_channels=0), "in_channels=0"),
                         (dict(n_classes=3, n_convs=0), "n_convs=0")]:
        with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(".", r"\.")):
            unet(**kwargs)


# ---------------------------------------------------------------- MS-D Net

def test_msd_net_parameter_count_and_any_size():
    d, w, c_in, n = 6, 2, 1, 3
    model = msd_net(n, in_channels=c_in, ndim=3, depth=d, width=w)
    per_layer = sum(27 * (c_in + i * w) * w + w for i in range(d))
    assert model.count_params() == per_layer + (c_in + d * w) * n + n
    dilations = [l.dilation_rate[0] for l in model.layers if isinstance(l, layers.Conv3D) and l.kernel_size[0] == 3]
    assert dilations == [1, 2, 3, 4, 5, 6]
    assert np_(model(np.zeros((1, 7, 9, 11, 1), "float32"))).shape == (1, 7, 9, 11, 3)


def test_msd_net_dilation_cycle():
    model = msd_net(2, ndim=2, depth=23, max_dilation=10)
    dilations = [l.dilation_rate[0] for l in model.layers if isinstance(l, layers.Conv2D) and l.kernel_size[0] == 3]
    assert dilations == [(i % 10) + 1 for i in range(23)]


# ---------------------------------------------------------------- ensembles

def members(k=3, n_classes=3):
    return [unet(n_classes, ndim=2, depth=2, base_filters=4) for _ in range(k)]


def test_average_ensemble_is_the_mean():
    ms = members()
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype("float32")
    expected = np.mean([np_(m(x)) for m in ms], axis=0)
    np.testing.assert_allclose(np_(average_ensemble(ms)(x)), expected, atol=1e-6)


def test_average_ensemble_of_deep_supervision_members_uses_main_output():
    ms = [unet(2, ndim=2, depth=2, base_filters=4, deep_supervision=True) for _ in range(2)]
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32")
    expected = np.mean([np_(m(x)[0]) for m in ms], axis=0)
    np.testing.assert_allclose(np_(average_ensemble(ms)(x)), expected, atol=1e-6)


def test_stacking_trains_only_the_combiner_and_improves():
    ms = members()
    frozen_before = [np_(w).copy() for m in ms for w in m.weights]
    stack = stacking_ensemble(ms, top_k=2, scores=[0.1, 0.9, 0.5])
    assert sum(int(np.prod(w.shape)) for w in stack.trainable_weights) == 2 * 3 * 3 + 3
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(4, 16, 16, 1))
    stack.compile(keras.optimizers.Adam(0.05), loss=CE())
    before = stack.evaluate(x, y, verbose=0)
    stack.fit(x, y, epochs=20, verbose=0)
    assert stack.evaluate(x, y, verbose=0) < before
    frozen_after = [np_(w) for m in ms for w in m.weights]
    for a, b in zip(frozen_before, frozen_after):
        np.testing.assert_array_equal(a, b)


def test_stacking_picks_top_k_by_score():
    ms = members()
    stack = stacking_ensemble(ms, top_k=1, scores=[0.1, 0.9, 0.5])
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32")
    np.testing.assert_array_equal(np_(stack(x)).argmax(-1), np_(ms[1](x)).argmax(-1))


def test_ensemble_errors():
    with pytest.raises(ValueError, match="models is empty"):
        average_ensemble([])
    with pytest.raises(ValueError, match="top_k=4"):
        stacking_ensemble(members(), top_k=4)
    with pytest.raises(ValueError, match="same contract"):
        average_ensemble([unet(3, ndim=2, depth=1, base_filters=2), unet(3, ndim=3, depth=1, base_filters=2)])


# ---------------------------------------------------------------- check_model

def test_check_model_accepts_matching_models():
    check_model(unet(3, depth=3, base_filters=4), 1, 3, 3, (16, 32, 32))
    check_model(msd_net(2, in_channels=2, ndim=2, depth=2), 2, 2, 2, (13, 17))
    user = keras.Sequential([keras.Input((32, 32, 1)), layers.Conv2D(4, 3, padding="same", activation="relu"),
                             layers.Conv2D(2, 1, activation="softmax")])
    check_model(user, 1, 2, 2, (32, 32))


@pytest.mark.parametrize("args,text", [
    ((1, 2, 3, (16, 16, 16)), "labels have 2 classes"),
    ((3, 3, 3, (16, 16, 16)), "data has 3"),
    ((1, 3, 2, (16, 16)), "expected ndim=2"),
    ((1, 3, 3, (16, 16)), "has 2 axes; expected 3"),
    ((1, 3, 3, (16, 12, 16)), "divisible by 8; e.g. use (16, 16, 16)"),
])
def test_check_model_explains_mismatches(args, text):
    model = unet(3, depth=3, base_filters=2)
    with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(")", r"\)")):
        check_model(model, *args)


def test_check_model_fixed_input_size():
    user = keras.Sequential([keras.Input((32, 32, 1)), layers.Conv2D(2, 1, activation="softmax")])
    with pytest.raises(ValueError, match="only accepts spatial shape"):
        check_model(user, 1, 2, 2, (16, 16))


# ---------------------------------------------------------------- saving and loading

@pytest.mark.parametrize("build", [
    lambda: unet(3, depth=2, base_filters=4, block="dense", normalization="instance", upsampling="upsample"),
    lambda: nnunet_like(depth=2, base_filters=4, deep_supervision=True),
    lambda: residual_unet(ndim=2, depth=2, base_filters=4, dropout=0.2),
    lambda: msd_net(3, ndim=3, depth=3, normalization="batch"),
    lambda: unet(3, depth=2, base_filters=4, deep_supervision=True, regions=[[1, 2], [2]]),
    lambda: msd_net(4, ndim=2, depth=3, regions=[[1, 2, 3], [1, 3], [3]]),
])
def test_save_and_load_in_safe_mode_without_custom_objects(build, tmp_path):
    model = build()
    ndim = len(model.inputs[0].shape) - 2
    x = np.random.default_rng(0).normal(size=(1,) + (8,) * ndim + (1,)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(loaded(x))):
        np.testing.assert_allclose(np_(a), np_(b), atol=1e-6)


def test_ensembles_save_and_load(tmp_path):
    ms = members(2)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32")
    for i, ens in enumerate([average_ensemble(ms), stacking_ensemble(ms)]):
        ens.save(tmp_path / f"e{i}.keras")
        np.testing.assert_allclose(np_(load_model(tmp_path / f"e{i}.keras")(x)), np_(ens(x)), atol=1e-6)


def test_lambda_model_is_refused_with_an_explanation(tmp_path):
    x_in = keras.Input((4, 4, 1))
    model = keras.Model(x_in, layers.Lambda(lambda t: t + 1)(x_in))
    model.save(tmp_path / "evil.keras")
    with pytest.raises(ValueError, match="Lambda layer") as info:
        load_model(tmp_path / "evil.keras")
    assert "safe mode" in str(info.value) and "evil.keras" in str(info.value)


def test_load_model_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "none.keras")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="'.keras' file"):
        load_model(tmp_path / "w.h5")


@pytest.mark.parametrize("regions", [None, [[1, 2], [2]]])
def test_mixed_precision_keeps_float32_probabilities(regions):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = unet(3, ndim=2, depth=2, base_filters=4, deep_supervision=True, regions=regions)
        outs = model(np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype("float32"))
        assert [keras.backend.standardize_dtype(o.dtype) for o in outs] == ["float32"] * 2   # main + aux_1
        assert keras.backend.standardize_dtype(model.layers[1].compute_dtype) == "bfloat16"
        np.testing.assert_allclose(np_(keras.ops.sum(outs[0], axis=-1)), 1.0, atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dropout_masks_follow_the_seed_on_every_backend():
    "Two networks seeded alike drop the same units in training mode (an unseeded Dropout on torch would not)."
    from miscnn_lite.models import seed_weights
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    outputs = []
    for seed in (7, 7, 8):
        model = seed_weights(unet(2, depth=1, base_filters=4, dropout=0.5), seed)
        outputs.append(keras.ops.convert_to_numpy(model(x, training=True)))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[0], outputs[2])
