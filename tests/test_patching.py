"""Heavier checks of miscnn_lite.patching: brute-force oracles, statistics over many draws, memory,
memory-mapped inputs, a Keras model as `predict`, and import hygiene (no keras/tensorflow at import)."""
import itertools
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from miscnn_lite.patching import (
    PatchAccumulator,
    PatchSampler,
    SliceSampler,
    analysis_patch_shape,
    class_locations,
    grid_starts,
    merge_patches,
    mirror_tta,
    patch_grid,
    patch_weights,
    sliding_window_predict,
)


def _brute_force_merge(shape, grid, values, weights):
    "Oracle: for every voxel, the weighted mean of the constants of the patches that contain it."
    out = np.zeros(shape)
    for idx in itertools.product(*map(range, shape)):
        num = den = 0.0
        for s, v in zip(grid, values):
            if all(sl.start <= i < sl.stop for sl, i in zip(s, idx)):
                w = weights[tuple(i - sl.start for sl, i in zip(s, idx))]
                num, den = num + w * v, den + w
        out[idx] = num / den
    return out


@pytest.mark.parametrize("weighting", ["mean", "gaussian"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_matches_voxelwise_oracle(weighting, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(5, 12, 3))
    patch = tuple(int(rng.integers(2, s + 1)) for s in shape)
    overlap = tuple(float(o) for o in rng.uniform(0, 0.9, 3))
    grid = patch_grid(shape, patch, overlap)
    values = rng.normal(size=len(grid))
    merged = merge_patches((np.full((*patch, 1), v) for v in values), grid, shape, weighting)
    expected = _brute_force_merge(shape, grid, values, patch_weights(patch, weighting))
    np.testing.assert_allclose(merged[..., 0], expected, rtol=1e-5, atol=1e-6)


def test_three_overlapping_patches_weigh_equally():
    "MIScnn's pairwise merge gives 1/4, 1/4, 1/2 where three patches overlap; we must give 1/3 each."
    grid = patch_grid((1, 1, 6), (1, 1, 4), 0.9)           # starts 0, 1, 2: voxels 2 and 3 see three patches
    assert [s[2].start for s in grid] == [0, 1, 2]
    merged = merge_patches((np.full((1, 1, 4, 1), v) for v in (0.0, 3.0, 6.0)), grid, (1, 1, 6), "mean")
    np.testing.assert_allclose(merged[0, 0, :, 0], [0, 1.5, 3, 3, 4.5, 6])


@pytest.mark.parametrize("shape,patch,overlap", [((17, 33, 29), (8, 16, 16), 0.5), ((8, 8, 8), (8, 8, 8), 0.0),
                                                 ((30, 7, 41), (3, 7, 10), (0.0, 0.5, 0.75))])
def test_grid_covers_every_voxel_and_respects_overlap(shape, patch, overlap):
    grid = patch_grid(shape, patch, overlap)
    cover = np.zeros(shape, int)
    for s in grid:
        cover[s] += 1
    assert cover.min() >= 1
    overlaps = overlap if isinstance(overlap, tuple) else (overlap,) * 3
    for axis, (size, p, o) in enumerate(zip(shape, patch, overlaps)):
        starts = grid_starts(size, p, o)
        assert starts[0] == 0 and starts[-1] == size - p
        steps = np.diff(starts)
        assert (steps <= np.ceil(p * (1 - o))).all() and (steps >= 1).all()   # the asked overlap, up to rounding


def test_gaussian_weights_match_filtered_delta():
    "nnU-Net builds its importance map by Gaussian-filtering a centred delta; compare in the interior."
    # ours is centred at (p-1)/2 (symmetric), a delta at p//2: compare on odd sizes where both agree
    odd = (15, 31, 25)
    delta = np.zeros(odd); delta[tuple(p // 2 for p in odd)] = 1
    ref = ndimage.gaussian_filter(delta, [p / 8 for p in odd], mode="constant", truncate=8)
    np.testing.assert_allclose(patch_weights(odd), ref / ref.max(), rtol=0.02, atol=1e-4)
    assert patch_weights((16, 32, 24)).min() > 0


def test_sliding_window_never_materialises_all_patches():
    volume = np.random.default_rng(0).normal(size=(64, 128, 128)).astype(np.float32)   # 4 MB
    patch, overlap = (16, 16, 16), 0.75
    n = len(patch_grid(volume.shape, patch, overlap))
    all_patches_bytes = n * 16 ** 3 * 4
    tracemalloc.start()
    out = sliding_window_predict(volume, patch, overlap, lambda b: b, batch_size=4, weighting="mean")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(out[..., 0], volume)
    assert all_patches_bytes > 100e6                       # materialising them would cost > 100 MB
    assert peak < 40e6, f"peak {peak / 1e6:.1f} MB"          # accumulators (~17 MB) + one batch


def test_sliding_window_with_keras_model():
    keras = pytest.importorskip("keras")
    inp = keras.Input((8, 16, 16, 1))
    out = keras.layers.Conv3D(2, 3, padding="same", activation="softmax", kernel_initializer="ones")(inp)
    model = keras.Model(inp, out)
    volume = np.random.default_rng(0).normal(size=(12, 20, 30)).astype(np.float32)
    probs = sliding_window_predict(volume, (8, 16, 16), 0.5, lambda b: model.predict_on_batch(b), batch_size=2)
    assert probs.shape == (12, 20, 30, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)


def test_mirror_tta_equals_explicit_average():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3))
    net = lambda b: ndimage.convolve(b[..., 0], kernel[None], mode="nearest")[..., None]
    batch = rng.normal(size=(2, 6, 7, 8, 1))
    expected = np.mean([np.flip(net(np.flip(batch, ax)), ax) for ax in [(), (1,), (3,), (1, 3)]], axis=0)
    np.testing.assert_allclose(mirror_tta(net, (0, 2))(batch), expected, atol=1e-12)


def test_uniform_sampler_reaches_every_start_evenly():
    image = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)
    label = np.zeros((4, 4, 4), np.uint8)
    sampler = PatchSampler((2, 2, 2), foreground_fraction=0.0)
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(2700):
        img, _ = sampler(image, label, rng)
        start = tuple(int(i) for i in np.argwhere(image == img[0, 0, 0, 0])[0])
        counts[start] = counts.get(start, 0) + 1
    assert len(counts) == 27                                     # all 3×3×3 starts
    assert min(counts.values()) > 60 and max(counts.values()) < 140   # 100 expected each


def test_foreground_patch_is_centred_on_the_voxel():
    image = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    label = np.zeros((20, 20, 20), np.uint8)
    label[9, 11, 7] = 2
    img, lab = PatchSampler((5, 6, 4), foreground_fraction=1.0, foreground_classes=(2,))(
        image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(img[..., 0], image[7:12, 8:14, 5:9])   # start = voxel - patch // 2
    assert lab[2, 3, 2] == 2


def test_foreground_near_border_stays_inside():
    image = np.zeros((10, 10, 10), np.float32)
    label = np.zeros((10, 10, 10), np.uint8)
    label[0, 9, 0] = 1
    rng = np.random.default_rng(0)
    for _ in range(10):
        img, lab = PatchSampler((4, 4, 4), foreground_fraction=1.0)(image, label, rng)
        assert img.shape == (4, 4, 4, 1) and lab[0, 3, 0] == 1


def test_sampler_reads_memmaps_and_returns_copies(tmp_path):
    image = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    label = (image > 1).astype(np.uint8)
    np.save(tmp_path / "img.npy", image); np.save(tmp_path / "lab.npy", label)
    mm_img = np.load(tmp_path / "img.npy", mmap_mode="r")
    mm_lab = np.load(tmp_path / "lab.npy", mmap_mode="r")
    locs = class_locations(mm_lab, (1,))
    for sampler in (PatchSampler((8, 8, 8), foreground_fraction=1.0),
                    PatchSampler((1, 16, 16), slab_neighbours=2)):
        img, lab = sampler(mm_img, mm_lab, np.random.default_rng(0), locations=locs)
        assert type(img) is np.ndarray and type(lab) is np.ndarray
        assert not np.shares_memory(img, mm_img)


def test_foreground_fraction_statistics():
    image = np.zeros((32, 32, 32), np.float32)
    label = np.zeros((32, 32, 32), np.uint8)
    label[30:, 30:, 30:] = 1                                     # a tiny corner: uniform crops rarely hit it
    rng = np.random.default_rng(0)
    sampler = PatchSampler((4, 4, 4), foreground_fraction=1 / 3)
    hits = np.mean([sampler(image, label, rng)[1].any() for _ in range(1500)])
    assert abs(hits - 1 / 3) < 0.05, hits


def test_absent_class_raises_even_when_the_draw_is_uniform():
    label = np.zeros((8, 8, 8), np.uint8); label[2, 2, 2] = 1
    sampler = PatchSampler((4, 4, 4), foreground_fraction=0.01, foreground_classes=(2,))
    with pytest.raises(ValueError, match="none of \\(2,\\) occurs"):
        sampler(np.zeros((8, 8, 8)), label, np.random.default_rng(0))
    # no foreground at all and no class asked for: uniform crops
    img, lab = PatchSampler((4, 4, 4), foreground_fraction=1.0)(np.zeros((8, 8, 8)), np.zeros((8, 8, 8), np.uint8),
                                                                np.random.default_rng(0))
    assert img.shape == (4, 4, 4, 1)


def test_multichannel_and_modes():
    image = np.random.default_rng(0).normal(size=(10, 12, 14, 2)).astype(np.float32)
    label = np.zeros((10, 12, 14), np.uint8); label[5] = 1
    rng = np.random.default_rng(0)
    assert PatchSampler(analysis_patch_shape("fullimage"))(image, label, rng)[0].shape == (10, 12, 14, 2)
    assert PatchSampler(analysis_patch_shape("slab"), slab_neighbours=1)(image, label, rng)[0].shape == (1, 12, 14, 6)
    assert SliceSampler(4)(image, label, rng)[0].shape == (4, 12, 14, 2)


def test_accumulator_rejects_wrong_shapes():
    acc = PatchAccumulator((4, 4, 4), 2, (2, 2, 2), "mean")
    with pytest.raises(ValueError, match="does not match the patch"):
        acc.add((slice(0, 2),) * 3, np.zeros((2, 2, 2, 3)))


def test_modules_do_not_import_keras():
    code = ("import sys, miscnn_lite.patching, miscnn_lite.augmentation; "
            "bad = [m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_progress_bar_does_not_change_the_result(capsys):
    volume = np.random.default_rng(0).normal(size=(10, 20, 20)).astype(np.float32)
    quiet = sliding_window_predict(volume, (8, 8, 8), 0.5, lambda b: b, 3)
    loud = sliding_window_predict(volume, (8, 8, 8), 0.5, lambda b: b, 3, progress=True)
    np.testing.assert_array_equal(quiet, loud)
    assert "sliding window" in capsys.readouterr().err


def test_sampler_numbers_are_checked_when_made_and_a_pad_value_must_fit_the_image():
    from miscnn_lite.io import MiscnnError
    from miscnn_lite.patching import PatchSampler
    for bad, words in [(dict(pad_value=float("nan")), "pad_value: nan must be a finite number or None"),
                       (dict(pad_value="air"), "pad_value: 'air' must be"), (dict(min_std=float("nan")), "min_std"),
                       (dict(min_std=-1.0), "min_std: -1.0 must be a finite number >= 0"),
                       (dict(foreground_classes=(1.7,)), r"foreground_classes: \(1.7,\) must be a list of class"),
                       (dict(foreground_classes="12"), "foreground_classes: '12'"),
                       (dict(foreground_classes=(True,)), "foreground_classes"),
                       (dict(patch_shape=(True, 4, 4)), "entries must be positive integers")]:
        with pytest.raises(MiscnnError, match=words):
            PatchSampler(**{"patch_shape": (4, 4, 4), **bad})
    assert PatchSampler((4, 4, 4), foreground_classes=(1.0, 2)).foreground_classes == (1, 2)
    image, label = np.full((2, 2, 2), 7, np.uint8), np.zeros((2, 2, 2), np.uint8)
    for value in (300.0, -1024.0, 2.5):
        with pytest.raises(MiscnnError, match=f"pad_value: {value!r} does not fit this uint8 image"):
            PatchSampler((4, 4, 4), pad_value=value, foreground_fraction=0.0)(image, label, 0)
    patch, _ = PatchSampler((4, 4, 4), pad_value=3, foreground_fraction=0.0)(image, label, 0)
    assert sorted(np.unique(patch).tolist()) == [3, 7]
