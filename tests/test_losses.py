"""Losses and metrics of miscnn_lite.losses against numpy references written the long way
(one sample and one class at a time), on random inputs and empty-class edge cases.

Backend-agnostic: tests/test_backends.py runs this file again with KERAS_BACKEND=torch and =jax.
"""
import keras
import numpy as np
import pytest
from medpy.metric.binary import dc as medpy_dice

from miscnn_lite.losses import (
    LOSSES,
    ClasswiseDiceLoss,
    CrossEntropyLoss,
    DiceCELoss,
    DiceMetric,
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    SoftDiceLoss,
    TanimotoCELoss,
    TverskyLoss,
    class_dice,
    get_loss,
    one_hot_target,
    per_class_dice_metrics,
)

S = 1e-5


@pytest.fixture(autouse=True)
def _package_classes_registered():
    """Register the package's classes again: the 07_losses notebook, when tests/test_notebooks.py runs it
    in this same process, registers its own copies (defined in __main__) under the same names."""
    for cls in [*LOSSES.values(), DiceMetric]:
        keras.saving.register_keras_serializable(package="miscnn_lite")(cls)


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------- numpy references

def ref_sums(labels, probs):
    """tp, fp, fn per sample and class, with explicit loops. labels (B, ..., 1) int, probs (B, ..., C)."""
    B, C = probs.shape[0], probs.shape[-1]
    tp, fp, fn = (np.zeros((B, C)) for _ in range(3))
    for b in range(B):
        for c in range(C):
            g = (labels[b, ..., 0] == c).astype(np.float64)
            p = probs[b, ..., c].astype(np.float64)
            tp[b, c], fp[b, c], fn[b, c] = (g * p).sum(), ((1 - g) * p).sum(), (g * (1 - p)).sum()
    return tp, fp, fn


def ref_ce(labels, probs, weights=None):
    C = probs.shape[-1]
    w = np.ones(C) if weights is None else np.asarray(weights, float)
    out = []
    for b in range(probs.shape[0]):
        lab = labels[b, ..., 0].ravel()
        p = probs[b].reshape(-1, C).astype(np.float64)
        out.append(np.mean([-w[l] * np.log(np.clip(p[i, l], 1e-7, 1)) for i, l in enumerate(lab)]))
    return np.array(out)


def ref_loss(name, labels, probs, **kw):
    """Per-sample loss (B,). batch_dice=True: sums pooled over the batch, the one value repeated B times."""
    B = probs.shape[0]
    tp, fp, fn = ref_sums(labels, probs)
    if kw.get("batch_dice"):
        tp, fp, fn = (v.sum(0, keepdims=True) for v in (tp, fp, fn))
    s = kw.get("smooth", S)
    if name == "soft_dice":
        return 1 - (2 * tp.sum(1) + s) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1) + s)
    if name == "dice":
        w = np.ones(tp.shape[1]) if kw.get("class_weights") is None else np.asarray(kw["class_weights"], float)
        if not kw.get("include_background", True):
            w[0] = 0
        w = w / w.sum()
        return 1 - ((2 * tp + s) / (2 * tp + fp + fn + s) * w).sum(1)
    if name == "jaccard":
        return 1 - ((tp + s) / (tp + fp + fn + s)).mean(1)
    a, b = kw.get("alpha", 0.3), kw.get("beta", 0.7)
    ti = (tp + s) / (tp + a * fp + b * fn + s)
    if name == "tversky":
        return 1 - ti.mean(1)
    if name == "focal_tversky":
        return (np.maximum(1 - ti, 1e-7) ** (1 / kw.get("gamma", 4 / 3))).mean(1)
    if name == "generalized_dice":
        out = []
        for i in range(tp.shape[0]):
            vol = tp[i] + fn[i]
            w = np.array([1 / v**2 if v > 0 else 0.0 for v in vol])
            w[vol == 0] = w.max() if w.max() > 0 else 1.0
            w /= w.sum()
            out.append(1 - (2 * (w * tp[i]).sum() + s) / ((w * (2 * tp[i] + fp[i] + fn[i])).sum() + s))
        return np.array(out)
    ce = ref_ce(labels, probs, kw.get("class_weights"))
    if name == "cross_entropy":
        return ce
    if name == "dice_ce":
        dice = (2 * tp + s) / (2 * tp + fp + fn + s)
        dice = (dice if kw.get("include_background", True) else dice[:, 1:]).mean(1)
        return kw.get("dice_weight", 1) * (1 - dice) + kw.get("ce_weight", 1) * ce
    if name == "tanimoto_ce":
        gp, pp, gg = (np.zeros((B, probs.shape[-1])) for _ in range(3))
        for bi in range(B):
            for c in range(probs.shape[-1]):
                g = (labels[bi, ..., 0] == c).astype(np.float64)
                p = probs[bi, ..., c].astype(np.float64)
                gp[bi, c], pp[bi, c], gg[bi, c] = (g * p).sum(), (p * p).sum(), (g * g).sum()
        if kw.get("batch_dice"):
            gp, pp, gg = (v.sum(0, keepdims=True) for v in (gp, pp, gg))
        t = ((gp + s) / (pp + gg - gp + s)).mean(1)
        return kw.get("tanimoto_weight", 0.6) * (1 - t) + kw.get("ce_weight", 0.4) * ce
    raise KeyError(name)


def random_case(seed, shape=(3, 6, 7, 5), n_classes=3, empty=()):
    """labels (B, ..., 1) with classes `empty` removed, softmax probs (B, ..., C) float32."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=shape)
    for c in empty:
        labels[labels == c] = 0
    logits = rng.normal(0, 2, size=shape + (n_classes,))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels[..., None], probs.astype("float32")


# ---------------------------------------------------------------- values

PARAMS = [("soft_dice", {}), ("dice", {}), ("dice", {"class_weights": [0.2, 1, 3]}),
          ("dice", {"include_background": False}), ("jaccard", {}), ("tversky", {}),
          ("tversky", {"alpha": 0.5, "beta": 0.5, "smooth": 1.0}), ("focal_tversky", {}),
          ("focal_tversky", {"gamma": 2.0, "alpha": 0.7, "beta": 0.3}), ("generalized_dice", {}),
          ("cross_entropy", {}), ("cross_entropy", {"class_weights": [0.5, 1, 2]}), ("dice_ce", {}),
          ("dice_ce", {"dice_weight": 0.3, "ce_weight": 2.0}), ("tanimoto_ce", {}),
          ("tanimoto_ce", {"tanimoto_weight": 0.5, "ce_weight": 0.5}),
          ("dice_ce", {"include_background": False}), ("dice_ce", {"include_background": False, "batch_dice": True}),
          ("dice", {"batch_dice": True}), ("soft_dice", {"batch_dice": True}), ("tversky", {"batch_dice": True}),
          ("generalized_dice", {"batch_dice": True}), ("tanimoto_ce", {"batch_dice": True})]


@pytest.mark.parametrize("name,kw", PARAMS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PARAMS)])
@pytest.mark.parametrize("seed,shape,empty", [(0, (3, 6, 7, 5), ()), (1, (2, 9, 8), (2,)), (2, (2, 4, 4, 4), (1, 2))])
def test_loss_matches_numpy_reference(name, kw, seed, shape, empty):
    labels, probs = random_case(seed, shape, empty=empty)
    loss = get_loss(name, **kw)
    per_sample = np_(get_loss(name, reduction=None, **kw)(labels, probs))
    expected = ref_loss(name, labels, probs, **kw)
    expected = np.broadcast_to(expected, (probs.shape[0],))     # a pooled (batch_dice) loss: one value per batch
    np.testing.assert_allclose(per_sample, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(float(np_(loss(labels, probs))), expected.mean(), atol=1e-5, rtol=1e-5)
    assert np.isfinite(per_sample).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_one_hot_and_integer_targets_agree(name):
    labels, probs = random_case(3)
    onehot = np.eye(3, dtype="float32")[labels[..., 0]]
    loss = get_loss(name)
    a, b, c = (float(np_(loss(t, probs))) for t in (labels, onehot, labels[..., 0]))
    assert a == pytest.approx(b, abs=1e-6) and a == pytest.approx(c, abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_prediction_is_the_minimum(name):
    labels, _ = random_case(4, empty=(2,))
    perfect = np.eye(3, dtype="float32")[labels[..., 0]]
    worst = np.eye(3, dtype="float32")[(labels[..., 0] + 1) % 3]
    loss = get_loss(name)
    best, bad = float(np_(loss(labels, perfect))), float(np_(loss(labels, worst)))
    assert np.isfinite(best) and np.isfinite(bad)
    assert best < 1e-4 and bad > 0.5


def test_all_empty_foreground_is_finite():
    labels = np.zeros((2, 4, 4, 4, 1), "int32")
    probs = np.full((2, 4, 4, 4, 3), 1 / 3, "float32")
    for name in LOSSES:
        assert np.isfinite(float(np_(get_loss(name)(labels, probs)))), name


def test_tversky_with_equal_weights_is_dice_and_gamma_1_focal_is_tversky():
    labels, probs = random_case(5)
    dice = float(np_(ClasswiseDiceLoss()(labels, probs)))
    assert float(np_(TverskyLoss(0.5, 0.5)(labels, probs))) == pytest.approx(dice, abs=1e-6)
    assert float(np_(FocalTverskyLoss(0.3, 0.7, gamma=1.0)(labels, probs))) == pytest.approx(
        float(np_(TverskyLoss(0.3, 0.7)(labels, probs))), abs=1e-6)


def test_class_dice_matches_medpy_on_hard_masks():
    labels, probs = random_case(6)
    hard = np.eye(3, dtype="float32")[probs.argmax(-1)]
    dice = np_(class_dice(labels, hard, smooth=0.0))
    for b in range(labels.shape[0]):
        for c in range(3):
            assert dice[b, c] == pytest.approx(medpy_dice(hard[b, ..., c] > 0, labels[b, ..., 0] == c), abs=1e-6)


# ---------------------------------------------------------------- gradients

def train_toy(loss, seed=0, steps=25):
    """Per-epoch training loss of a 1x1-conv softmax model on a 2D toy with class 2 absent."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(4, 12, 12, 1))
    x = (np.eye(3)[y[..., 0]] + rng.normal(0, 0.5, size=(4, 12, 12, 3))).astype("float32")
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
    m.compile(keras.optimizers.SGD(0.5), loss=loss)
    hist = m.fit(x, y, batch_size=4, epochs=steps, verbose=0).history["loss"]
    return np.array(hist), [np_(w) for w in m.weights]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sgd_decreases_every_loss_and_weights_stay_finite(name):
    hist, weights = train_toy(get_loss(name))
    assert np.isfinite(hist).all() and all(np.isfinite(w).all() for w in weights)
    assert hist[-1] < hist[0]


def test_gradient_is_finite_at_a_perfect_prediction():
    """Softmax of huge logits gives exact 0/1 probabilities: every loss must keep finite weights."""
    y = np.zeros((2, 4, 4, 1), "int32")
    y[:, :2] = 1
    x = (np.eye(3)[y[..., 0]] * 200).astype("float32")
    for name in sorted(LOSSES):
        m = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
        m.set_weights([np.eye(3, dtype="float32")[None, None], np.zeros(3, "float32")])
        m.compile(keras.optimizers.SGD(0.1), loss=get_loss(name))
        loss = m.train_on_batch(x, y)
        assert np.isfinite(loss), name
        assert all(np.isfinite(np_(w)).all() for w in m.weights), name


@pytest.mark.parametrize("name", ["dice", "soft_dice", "jaccard", "tversky", "focal_tversky", "generalized_dice"])
def test_batch_dice_is_the_loss_of_the_batch_laid_side_by_side(name):
    """Pooling the sums over the batch = the per-sample loss of one sample made of all patches
    placed next to each other along an axis (an invariant, independent of the reference above)."""
    labels, probs = random_case(3, (4, 5, 6, 3), empty=(2,))
    labels[0, 0, 0, 0] = 2                                   # tumor in sample 0 only: empty in 3 of 4
    side = lambda a: np.concatenate(list(a), axis=0)[None]   # (B, d, h, w, ·) -> (1, B·d, h, w, ·)
    pooled = np_(get_loss(name, batch_dice=True, reduction=None)(labels, probs))
    one = np_(get_loss(name, reduction=None)(side(labels), side(probs)))
    np.testing.assert_allclose(pooled, np.repeat(one, 4), atol=1e-6)
    per_sample = np_(get_loss(name, reduction=None)(labels, probs))
    assert np.ptp(per_sample) > 1e-3                         # pooling really changes the values


# ---------------------------------------------------------------- serialisation

@pytest.mark.parametrize("loss", [ClasswiseDiceLoss([1, 2, 3], include_background=False), SoftDiceLoss(smooth=1.0),
                                  JaccardLoss(), TverskyLoss(0.1, 0.9), FocalTverskyLoss(gamma=2),
                                  GeneralizedDiceLoss(),
                                  CrossEntropyLoss([1, 1, 5]), DiceCELoss(0.5, 2), TanimotoCELoss(),
                                  DiceCELoss(include_background=False, batch_dice=True)])
def test_loss_round_trips_through_config(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    labels, probs = random_case(7)
    assert float(np_(restored(labels, probs))) == pytest.approx(float(np_(loss(labels, probs))), abs=1e-7)


def test_compiled_model_with_loss_and_metrics_loads_in_safe_mode(tmp_path):
    m = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(3, 1, activation="softmax")])
    m.compile("adam", loss=FocalTverskyLoss(0.2, 0.8, gamma=1.5), metrics=per_class_dice_metrics(3, ["bg", "kidney",
                                                                                                     "tumor"]))
    x, y = np.zeros((2, 4, 4, 1), "float32"), np.ones((2, 4, 4, 1))
    m.fit(x, y, verbose=0)
    m.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.loss, FocalTverskyLoss) and loaded.loss.gamma == 1.5 and loaded.loss.alpha == 0.2
    loaded.fit(x, y, verbose=0)


# ---------------------------------------------------------------- metric

def test_dice_metric_accumulates_over_batches_like_medpy_on_the_whole_epoch():
    labels, probs = random_case(8, shape=(4, 6, 6, 6))
    metrics = per_class_dice_metrics(3, include_background=True)
    for lo in range(0, 4, 2):
        for mt in metrics:
            mt.update_state(labels[lo:lo + 2], probs[lo:lo + 2])
    pred = probs.argmax(-1)
    for c, mt in enumerate(metrics):
        assert mt.name == f"dice_{c}"
        assert float(np_(mt.result())) == pytest.approx(medpy_dice(pred == c, labels[..., 0] == c), abs=1e-5)


def test_dice_metric_empty_class_is_one_and_config_round_trips():
    mt = DiceMetric(2, name="dice_tumor")
    labels = np.zeros((1, 4, 4, 1))
    mt.update_state(labels, np.eye(3, dtype="float32")[np.zeros((1, 4, 4), int)])
    assert float(np_(mt.result())) == pytest.approx(1.0)
    restored = DiceMetric.from_config(mt.get_config())
    assert (restored.class_id, restored.name) == (2, "dice_tumor")


# ---------------------------------------------------------------- errors

def test_errors_name_the_problem():
    labels, probs = random_case(9)
    with pytest.raises(ValueError, match=r"one-hot map \(B, \.\.\., 3\)"):
        one_hot_target(np.zeros((3, 6, 7, 5, 2)), probs)
    with pytest.raises(ValueError, match="class_weights has 2 values"):
        ClasswiseDiceLoss([1, 2])(labels, probs)
    with pytest.raises(ValueError, match="class_weights has 4 values"):
        CrossEntropyLoss([1, 2, 3, 4])(labels, probs)
    with pytest.raises(ValueError, match="must not all be zero"):
        ClasswiseDiceLoss([1, 0, 0], include_background=False)(labels, probs)
    with pytest.raises(ValueError, match="smooth=-1"):
        JaccardLoss(smooth=-1)
    with pytest.raises(ValueError, match="gamma=0"):
        FocalTverskyLoss(gamma=0)
    with pytest.raises(ValueError, match="batch_dice='yes'"):
        DiceCELoss(batch_dice="yes")
    with pytest.raises(ValueError, match="alpha=-0.1"):
        TverskyLoss(alpha=-0.1)
    with pytest.raises(ValueError, match="'dice_bce' is unknown"):
        get_loss("dice_bce")
    with pytest.raises(ValueError, match="class_id=3"):
        DiceMetric(3).update_state(labels, probs)


def test_loss_options_and_class_weights_are_checked_when_given():
    "An unknown option names the ones the loss takes; a negative or NaN class weight is refused (it would train away)."
    from miscnn_lite.io import MiscnnError
    from miscnn_lite.losses import _class_weights, get_loss
    with pytest.raises(MiscnnError, match=r"unknown option\(s\) \['bogus'\]; it takes \[.*'class_weights'"):
        get_loss("dice_ce", bogus=1)
    for weights in ([-1, 1, 1], [float("nan"), 1, 1]):
        with pytest.raises(MiscnnError, match="every weight must be a finite number >= 0"):
            _class_weights(weights, 3)
    assert _class_weights([0, 1, 3], 3).tolist() == [0, 1, 3]
