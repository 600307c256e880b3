"""Heavier checks of miscnn_lite.augmentation: alignment of image and label under every spatial
transform, multi-channel consistency, reproducibility across threads, no leak into numpy's global
random state, and the transform registry."""
import random
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from miscnn_lite import augmentation as aug
from miscnn_lite.augmentation import (
    AugmentationPipeline,
    ClusterIntensityShift,
    Compose,
    ElasticDeformation,
    Mirror,
    Rotation,
    Scaling,
    SliceInterpolation,
    SliceSkipping,
    augmentation_from_dict,
    ct_augmentation,
    kmeans_1d,
)


def _blobs(shape=(12, 40, 40), seed=0):
    "A label of random boxes and an image equal to it (so alignment can be checked voxel by voxel)."
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for c in (1, 2, 1, 2):
        z, y, x = (rng.integers(0, s - s // 3) for s in shape)
        label[z:z + shape[0] // 3, y:y + shape[1] // 3, x:x + shape[2] // 3] = c
    return label.astype(np.float32), label


@pytest.mark.parametrize("transform", [Rotation(max_angle_deg=16, order=0), Scaling(order=0),
                                       ElasticDeformation(deformation_scale=(0.1, 0.25), order=0),
                                       Rotation(max_angle_deg=16, out_of_plane_deg=10, order=0),
                                       Mirror(axes=(0, 1, 2)),
                                       aug.Spatial(p_rotation=1, p_scale=1, p_elastic=1, order=0)])
def test_spatial_transforms_keep_image_and_label_aligned(transform):
    image, label = _blobs()
    for seed in range(3):
        im2, lb2 = transform(image, label, np.random.default_rng(seed))
        assert im2.shape == image.shape and lb2.shape == label.shape and lb2.dtype == np.uint8
        # an image that equals its label stays equal to it (nearest neighbour on both), border voxels too:
        # where the transform reaches past the patch, both are continued from the same edge voxels
        assert np.array_equal(np.rint(im2), lb2), np.mean(np.rint(im2) == lb2)


@pytest.mark.parametrize("transform", [Rotation(max_angle_deg=45, order=0), Scaling(scale_range=(1.25, 1.25), order=0),
                                       ElasticDeformation(deformation_scale=(0.1, 0.25), order=0),
                                       aug.Spatial(p_rotation=1, p_scale=1, p_elastic=1, order=0)])
def test_one_slice_patches_stay_aligned(transform):
    "A (1, H, W) patch (2D and 2.5D networks) is moved in its plane only: its label is not pushed off the slice."
    image, label = _blobs((3, 48, 48))
    image, label = image[1:2], label[1:2]
    for seed in range(5):
        im2, lb2 = transform(image, label, np.random.default_rng(seed))
        assert np.array_equal(np.rint(im2), lb2)
        assert (lb2 > 0).sum() > 0.5 * (label > 0).sum()               # the organs are still there


def test_channels_move_together():
    image, label = _blobs()
    two = np.stack([image, 10 * image + 1], axis=-1)
    out, _ = ElasticDeformation(deformation_scale=(0.2, 0.25), order=1)(two, label, np.random.default_rng(0))
    np.testing.assert_allclose(out[..., 1], 10 * out[..., 0] + 1, atol=1e-4)


def test_same_seed_same_batch_across_threads():
    image, label = _blobs()
    images, labels = np.stack([image] * 2), np.stack([label] * 2)
    pipeline = ct_augmentation(3, batch_ratio=1.0, elastic=True)
    sequential = [pipeline(images, labels, np.random.default_rng(s)) for s in range(8)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda s: pipeline(images, labels, np.random.default_rng(s)), range(8)))
    for (a_img, a_lab), (b_img, b_lab) in zip(sequential, threaded):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)
    assert len({a.tobytes() for a, _ in sequential}) > 1


def test_global_random_state_untouched():
    image, label = _blobs()
    np.random.seed(123); random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123); random.seed(123)
    ct_augmentation(3, batch_ratio=1.0)(np.stack([image] * 3), np.stack([label] * 3), np.random.default_rng(0))
    assert (np.random.random(), random.random()) == expected


def test_every_registered_transform_round_trips_and_keeps_shapes():
    image, label = _blobs()
    for name, cls in aug._registry().items():
        t = cls(p=1.0)
        again = augmentation_from_dict(t.to_dict())
        assert again == t, name
        a = t(image, label, np.random.default_rng(0))
        b = again(image, label, np.random.default_rng(0))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[0].shape == image.shape and a[0].dtype == np.float32, name
        assert a[1].shape == label.shape and set(np.unique(a[1])) <= {0, 1, 2}, name
        two_d = t(image[:1], label[:1], np.random.default_rng(0))          # a single slice works too
        assert two_d[0].shape == image[:1].shape, name


def test_label_none_and_channel_axis_preserved():
    image, _ = _blobs()
    out, lab = Compose([Rotation(), SliceSkipping(), ClusterIntensityShift(p=1)])(image[..., None], None,
                                                                                np.random.default_rng(0))
    assert out.shape == image.shape + (1,) and lab is None


def test_kmeans_matches_scipy_on_separated_clusters():
    vq = pytest.importorskip("scipy.cluster.vq")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 0.05, n) for m, n in ((-1, 300), (0.2, 200), (1.5, 100))])
    centres, assign = kmeans_1d(values, 3)
    ref, _ = vq.kmeans2(values[:, None], np.array([[-1.0], [0.0], [1.0]]), minit="matrix", iter=50)
    np.testing.assert_allclose(centres, np.sort(ref[:, 0]), atol=1e-6)
    assert np.bincount(assign).tolist() == [300, 200, 100]


def test_slice_interpolation_is_linear_between_kept_slices():
    ramp = (np.arange(10, dtype=np.float32) ** 2)[:, None, None] * np.ones((10, 2, 2), np.float32)
    out, _ = SliceInterpolation(factors=(3,))(ramp, None, np.random.default_rng(0))
    kept = [z for z in range(10) if np.isclose(out[z, 0, 0], ramp[z, 0, 0])]
    for a, b in zip(kept, kept[1:]):
        for z in range(a, b + 1):
            t = (z - a) / (b - a)
            np.testing.assert_allclose(out[z, 0, 0], (1 - t) * ramp[a, 0, 0] + t * ramp[b, 0, 0], rtol=1e-5)


def test_bad_inputs():
    image, label = _blobs()
    with pytest.raises(ValueError, match="p=-0.1 is not a probability"):
        Mirror(p=-0.1)
    with pytest.raises(ValueError, match="batch_ratio: 2"):
        AugmentationPipeline([], batch_ratio=2)
    with pytest.raises(ValueError, match="does not match the image grid"):
        Rotation()(image, label[:-1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="expected a batch"):
        ct_augmentation(3)(image[0, 0], None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_clusters=0"):
        ClusterIntensityShift(n_clusters=0)
    with pytest.raises(ValueError, match="order=7; give 0"):
        Rotation(order=7)
    for make, words in [(lambda: ClusterIntensityShift(n_clusters=1.5), "n_clusters=1.5 must be a whole number"),
                        (lambda: ClusterIntensityShift(max_shift=-1), "max_shift=-1 must be a number in [0, inf]"),
                        (lambda: Rotation(max_angle_deg="a"), "max_angle_deg='a' must be a number in [0, 180]"),
                        (lambda: aug.Spatial(p_scale=1.5), "p_scale=1.5 must be a number in [0, 1]"),
                        (lambda: aug.NoiseMap(smoothing_vox=-1), "smoothing_vox=-1 must be a number"),
                        (lambda: aug.NoiseMap(smoothing_vox="a"), "smoothing_vox='a'"),
                        (lambda: Mirror(p="0.5"), "p='0.5' is not a probability")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            make()
    with pytest.raises(ValueError, match="variance_range: 0.1 is not an interval"):
        aug.GaussianNoise(variance_range=0.1)
    with pytest.raises(ValueError, match="whole slice-skipping factors"):
        SliceSkipping(factors=(2.5,))
    with pytest.raises(ValueError, match=r"unknown parameters \['axis'\]"):
        augmentation_from_dict({"name": "Mirror", "axis": [1]})
    with pytest.raises(ValueError, match="needs a 'transforms' list"):
        augmentation_from_dict({"name": "Compose"})
    assert Mirror(axes=2).axes == (2,)


def test_intervals_and_orders_are_plain_checked_numbers_and_a_pipeline_runs_what_it_holds():
    import json

    from miscnn_lite.augmentation import (
        AugmentationPipeline,
        Brightness,
        GaussianNoise,
        Mirror,
        NoiseMap,
        Rotation,
        Scaling,
        augmentation_from_dict,
    )
    for make in (lambda: GaussianNoise(variance_range=(0, np.inf)), lambda: Brightness(multiplier_range=(1, np.inf)),
                 lambda: Scaling(scale_range=(1, np.inf)), lambda: NoiseMap(std_range=(0, np.inf)),
                 lambda: GaussianNoise(variance_range=(False, True)), lambda: Scaling(scale_range=(np.nan, 1.0))):
        with pytest.raises(ValueError, match="is not an interval; give two finite numbers"):
            make()
    scaling = Scaling(scale_range=np.array([0.9, 1.1]), order=1.0)          # numpy and YAML numbers: plain values
    assert scaling.scale_range == (0.9, 1.1) and type(scaling.order) is int and scaling.order == 1
    assert json.loads(json.dumps(scaling.to_dict()))["scale_range"] == [0.9, 1.1]
    assert augmentation_from_dict(scaling.to_dict()) == scaling
    for order in (True, 2, 1.5):
        with pytest.raises(ValueError, match=f"order={order!r}; give 0"):
            Rotation(order=order)
    pipeline = AugmentationPipeline([Mirror(p=0.0)], batch_ratio=1.0)
    pipeline.transforms.append(Brightness(p=1.0, multiplier_range=(2, 2)))  # edited after creation
    ones = np.ones((1, 4, 4, 4), np.float32)
    again = augmentation_from_dict(pipeline.to_dict())
    assert again == pipeline
    np.testing.assert_array_equal(pipeline(ones, None, 0)[0], again(ones, None, 0)[0])
    assert pipeline(ones, None, 0)[0].max() == 2.0
