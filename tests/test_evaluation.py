"""miscnn_lite.evaluation against reference implementations (test oracles only, no code copied).

- medpy (GPL-3, used only as an oracle): HD, HD95, ASSD, ASD, Dice, Jaccard, precision, recall,
  specificity -- our surface definition is medpy's, so values must agree within 1e-6.
- pymia 0.3.4: confusion-matrix, information, pair-counting, volume, area, ICC, PROBDST, MAHLNBS
  and continuous metrics, called through its metric classes (its Evaluator needs np.in1d, gone in
  numpy 2; the metric classes do not, so no monkeypatching is needed). pymia's distance metrics use
  a different surface definition (see the notebook's table) and are compared only for agreement in
  kind, not value.
- surface-distance (DeepMind): Dice exactly; its surface Dice (area-weighted surfels) equals SURFELDICE
  within 1e-6; its other surfel metrics agree with our voxel-based ones approximately.
- scikit-image: SSIM; SimpleITK: connected components and hole filling for post-processing.
- MONAI is not installed: skipped.
"""
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from miscnn_lite import evaluation as ev
from miscnn_lite.io import affine_from_spacing, save_nifti

medpy_binary = pytest.importorskip("medpy.metric.binary")
pm = pytest.importorskip("pymia.evaluation.metric")
pymia_base = pytest.importorskip("pymia.evaluation.metric.base")
surface_distance = pytest.importorskip("surface_distance")

SPACINGS_3D = [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (3.22, 1.62, 1.62)]
TOL = 1e-6


def ellipsoid(shape, center, radii):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def random_pair(seed, shape=(12, 20, 18), fraction=0.3):
    rng = np.random.default_rng(seed)
    return rng.random(shape) < fraction, rng.random(shape) < fraction


def phantom_pair(seed, shape=(24, 48, 48)):
    "Kidney-like ellipsoids, the prediction shifted/resized and with a stray blob."
    rng = np.random.default_rng(seed)
    c = np.array(shape) / 2
    ref = ellipsoid(shape, c, (6, 12, 9))
    pred = ellipsoid(shape, c + rng.integers(-2, 3, 3), (6 + rng.integers(-1, 2), 11, 10))
    blob = rng.integers(2, np.array(shape) - 2)
    pred |= ellipsoid(shape, blob, (1.5, 1.5, 1.5))
    return ref, pred


def single_voxel_pair(shape=(5, 6, 7)):
    ref, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    ref[1, 2, 3] = True
    pred[3, 4, 1] = True
    return ref, pred


def cases_3d():
    for seed in range(3):
        yield f"random{seed}", *random_pair(seed)
    for seed in range(3):
        yield f"phantom{seed}", *phantom_pair(seed)
    yield "single_voxel", *single_voxel_pair()
    ref, pred = phantom_pair(9)
    yield "identical", ref, ref.copy()
    # masks touching the image border (surface at the border, crop clipped at the edge)
    ref = np.zeros((6, 9, 9), bool); ref[:3, :5, 2:] = True
    pred = np.zeros((6, 9, 9), bool); pred[1:, 3:, :7] = True
    yield "border", ref, pred


CASES_3D = list(cases_3d())
IDS_3D = [c[0] for c in CASES_3D]


def cases_2d():
    for seed in range(3):
        r, p = random_pair(seed, shape=(25, 31))
        yield f"random2d{seed}", r, p
    r = ellipsoid((40, 40), (20, 20), (10, 14)); p = ellipsoid((40, 40), (22, 19), (11, 12))
    yield "ellipse2d", r, p


CASES_2D = list(cases_2d())
IDS_2D = [c[0] for c in CASES_2D]


# --------------------------------------------------------------------------- distances vs medpy
@pytest.mark.parametrize("spacing", SPACINGS_3D)
@pytest.mark.parametrize("name,ref,pred", CASES_3D, ids=IDS_3D)
def test_distances_match_medpy_3d(name, ref, pred, spacing):
    d = ev.surface_distances(ref, pred, spacing)
    assert ev.hausdorff_distance(d) == pytest.approx(medpy_binary.hd(pred, ref, spacing), abs=TOL)
    assert ev.hausdorff_distance(d, 95) == pytest.approx(medpy_binary.hd95(pred, ref, spacing), abs=TOL)
    assert ev.average_surface_distance(d) == pytest.approx(medpy_binary.assd(pred, ref, spacing), abs=TOL)
    assert ev.average_surface_distance(d, symmetric=False) == pytest.approx(medpy_binary.asd(pred, ref, spacing),
                                                                            abs=TOL)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.8, 2.5)])
@pytest.mark.parametrize("name,ref,pred", CASES_2D, ids=IDS_2D)
def test_distances_match_medpy_2d(name, ref, pred, spacing):
    values = ev.compute_metrics(ref, pred, spacing, ["HDRFDST", "HDRFDST95", "AVGDIST", "AVGDIST_P2R"])
    assert values["HDRFDST"] == pytest.approx(medpy_binary.hd(pred, ref, spacing), abs=TOL)
    assert values["HDRFDST95"] == pytest.approx(medpy_binary.hd95(pred, ref, spacing), abs=TOL)
    assert values["AVGDIST"] == pytest.approx(medpy_binary.assd(pred, ref, spacing), abs=TOL)
    assert values["AVGDIST_P2R"] == pytest.approx(medpy_binary.asd(pred, ref, spacing), abs=TOL)


@pytest.mark.parametrize("name,ref,pred", CASES_3D + CASES_2D, ids=IDS_3D + IDS_2D)
def test_surface_dice_matches_medpy_surface_distances(name, ref, pred):
    "SURFDICE/SURFOVLP counted on medpy's surface-voxel distance sets (MONAI's default definition)."
    spacing = (2.5, 0.8, 0.8)[-ref.ndim:]
    medpy_sds = getattr(medpy_binary, "__surface_distances")
    p2r = medpy_sds(pred, ref, spacing, 1)
    r2p = medpy_sds(ref, pred, spacing, 1)
    d = ev.surface_distances(ref, pred, spacing)
    for tol in (0.5, 1.0, 2.0, 5.0):
        expected = (np.sum(p2r <= tol) + np.sum(r2p <= tol)) / (p2r.size + r2p.size)
        assert ev.surface_dice(d, tol) == pytest.approx(expected, abs=TOL)
        assert ev.surface_overlap(d, tol) == pytest.approx(np.mean(p2r <= tol), abs=TOL)
        assert ev.surface_overlap(d, tol, prediction_to_reference=False) == pytest.approx(np.mean(r2p <= tol), abs=TOL)


def test_crop_is_exact_against_full_grid():
    "Distances computed on the cropped box equal distances computed on the full grid."
    ref, pred = phantom_pair(4, shape=(40, 80, 80))
    spacing = (2.5, 0.8, 0.8)
    d = ev.surface_distances(ref, pred, spacing)
    sr, sp = ev.surface_voxels(ref), ev.surface_voxels(pred)
    full_r2p = ndimage.distance_transform_edt(~sp, sampling=spacing)[sr]
    full_p2r = ndimage.distance_transform_edt(~sr, sampling=spacing)[sp]
    np.testing.assert_allclose(np.sort(d.reference_to_prediction), np.sort(full_r2p), atol=1e-9)
    np.testing.assert_allclose(np.sort(d.prediction_to_reference), np.sort(full_p2r), atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kits_phantom_labels_match_medpy_and_pymia(seed):
    "Per label of a KiTS-like phantom (miscnn_lite.phantoms) against a shifted, blob-corrupted copy."
    phantoms = pytest.importorskip("miscnn_lite.phantoms")
    case = phantoms.generate_phantom(seed, shape=(32, 64, 64), spacing=(3.22, 1.62, 1.62))
    reference = case.label
    prediction = np.roll(reference, 1, axis=1 + seed % 2)
    prediction[ellipsoid(reference.shape, (8, 10, 50), (1.5, 2, 2)) & (prediction == 0)] = 1
    table = ev.evaluate_case(reference, prediction, case.spacing, labels=[1, 2], require_labels=False,
                             metrics=["HDRFDST", "HDRFDST95", "AVGDIST", "DICE", "JACRD", "VOLSMTY"])
    value = table.set_index(["label", "metric"]).value
    for label in (1, 2):
        ref, pred = reference == label, prediction == label
        if not (ref.any() and pred.any()):
            continue
        key = str(label)
        assert value[key, "HDRFDST"] == pytest.approx(medpy_binary.hd(pred, ref, case.spacing), abs=TOL)
        assert value[key, "HDRFDST95"] == pytest.approx(medpy_binary.hd95(pred, ref, case.spacing), abs=TOL)
        assert value[key, "AVGDIST"] == pytest.approx(medpy_binary.assd(pred, ref, case.spacing), abs=TOL)
        for metric in ("DICE", "JACRD", "VOLSMTY"):
            assert value[key, metric] == pytest.approx(pymia_value(metric, ref, pred, case.spacing), abs=TOL)


# --------------------------------------------------------------------------- overlap vs medpy
@pytest.mark.parametrize("name,ref,pred", CASES_3D + CASES_2D, ids=IDS_3D + IDS_2D)
def test_overlap_matches_medpy(name, ref, pred):
    c = ev.confusion(ref, pred)
    assert ev.dice(c) == pytest.approx(medpy_binary.dc(pred, ref), abs=TOL)
    if (ref | pred).any():
        assert ev.jaccard(c) == pytest.approx(medpy_binary.jc(pred, ref), abs=TOL)
    if pred.any():
        assert ev.precision(c) == pytest.approx(medpy_binary.precision(pred, ref), abs=TOL)
    if ref.any():
        assert ev.sensitivity(c) == pytest.approx(medpy_binary.recall(pred, ref), abs=TOL)
    if (~ref).any():
        assert ev.specificity(c) == pytest.approx(medpy_binary.specificity(pred, ref), abs=TOL)


# --------------------------------------------------------------------------- pymia
PYMIA_CONFUSION = {
    "DICE": pm.DiceCoefficient, "JACRD": pm.JaccardCoefficient, "SNSVTY": pm.Sensitivity,
    "SPCFTY": pm.Specificity, "PRCISON": pm.Precision, "FMEASR": pm.FMeasure, "FALLOUT": pm.Fallout,
    "FNR": pm.FalseNegativeRate, "ACURCY": pm.Accuracy, "TP": pm.TruePositive, "FP": pm.FalsePositive,
    "TN": pm.TrueNegative, "FN": pm.FalseNegative,
    "VOLSMTY": pm.VolumeSimilarity, "RNDIND": pm.RandIndex, "ADJRIND": pm.AdjustedRandIndex,
    "MUTINF": pm.MutualInformation, "VARINFO": pm.VariationOfInformation, "KAPPA": pm.CohenKappaCoefficient,
    "AUC": pm.AreaUnderCurve,
}
PYMIA_ARRAYS = {"ICCORR": pm.InterclassCorrelation, "PROBDST": pm.ProbabilisticDistance,
                "MAHLNBS": pm.MahalanobisDistance}
PYMIA_SPACING = {"REFVOL": pm.ReferenceVolume, "PREDVOL": pm.PredictionVolume,
                 "REFAREA": pm.ReferenceArea, "PREDAREA": pm.PredictionArea}


def pymia_value(name, ref, pred, spacing):
    r, p = ref.astype(np.uint8), pred.astype(np.uint8)
    if name in PYMIA_CONFUSION or name == "GCOERR_pymia":
        metric = PYMIA_CONFUSION.get(name, pm.GlobalConsistencyError)()
        metric.confusion_matrix = pymia_base.ConfusionMatrix(p, r)
    else:
        metric = {**PYMIA_ARRAYS, **PYMIA_SPACING}[name]()
        metric.reference, metric.prediction = r, p
        if name in PYMIA_SPACING:
            metric.spacing = spacing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(metric.calculate())


def non_degenerate(ref, pred):
    "Both masks non-empty, not full, and overlapping (pymia's formulas are all defined there)."
    return all(m.any() and not m.all() for m in (ref, pred)) and (ref & pred).any()


@pytest.mark.parametrize("name,ref,pred", CASES_3D + CASES_2D, ids=IDS_3D + IDS_2D)
def test_pymia_metrics_match(name, ref, pred):
    if not non_degenerate(ref, pred):
        pytest.skip("degenerate pair: conventions differ deliberately (tested separately)")
    spacing = (2.5, 0.8, 0.8)[-ref.ndim:]
    ours = ev.compute_metrics(ref, pred, spacing, [*PYMIA_CONFUSION, *PYMIA_ARRAYS, *PYMIA_SPACING])
    for metric, value in ours.items():
        expected = pymia_value(metric, ref, pred, spacing)
        assert value == pytest.approx(expected, rel=1e-9, abs=TOL), metric


def test_gce_is_martins_definition_not_pymias_closed_form():
    "GCOERR summed voxel by voxel as Martin et al. define it; pymia's closed form differs (deliberately not matched)."
    rng = np.random.default_rng(0)
    differs = 0
    for q in (0.1, 0.3, 0.6):
        ref, pred = rng.random((2, 9, 11)) < q
        r, p = ref.ravel(), pred.ravel()

        def refinement_error(a, b):
            return sum(np.count_nonzero((a == a[i]) & (b != b[i])) / np.count_nonzero(a == a[i]) for i in range(a.size))
        expected = min(refinement_error(r, p), refinement_error(p, r)) / r.size
        ours = ev.compute_metrics(ref, pred, metrics=["GCOERR"])["GCOERR"]
        assert ours == pytest.approx(expected, abs=TOL)
        differs += abs(ours - pymia_value("GCOERR_pymia", ref, pred, (1, 1))) > 1e-3
    assert differs == 3


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_f_beta_matches_pymia(beta):
    ref, pred = phantom_pair(1)
    metric = pm.FMeasure(beta=beta)
    metric.confusion_matrix = pymia_base.ConfusionMatrix(pred.astype(np.uint8), ref.astype(np.uint8))
    assert ev.f_measure(ev.confusion(ref, pred), beta) == pytest.approx(metric.calculate(), abs=TOL)


def test_pymia_hausdorff_is_a_different_definition():
    "pymia's HDRFDST (surfel grid, area weights) is close to ours on smooth shapes but not equal."
    ref, pred = phantom_pair(2)
    spacing = (2.5, 0.8, 0.8)
    metric = pm.HausdorffDistance(percentile=95)
    metric.distances = pymia_base.Distances(pred.astype(np.uint8), ref.astype(np.uint8), spacing)
    ours = ev.compute_metrics(ref, pred, spacing, ["HDRFDST95"])["HDRFDST95"]
    assert ours == pytest.approx(metric.calculate(), abs=3 * max(spacing))


@pytest.mark.parametrize("shape", [(20, 30), (9, 20, 30)])
def test_continuous_metrics_match_pymia(shape):
    rng = np.random.default_rng(3)
    ref = rng.random(shape) * 100              # minimum ~0: pymia's data_range (max) ~ ours (max - min)
    ref.flat[0] = 0.0
    pred = ref + rng.normal(0, 5, shape)
    for name, cls in {"MAE": pm.MeanAbsoluteError, "MSE": pm.MeanSquaredError, "RMSE": pm.RootMeanSquaredError,
                      "NRMSE": pm.NormalizedRootMeanSquaredError, "R2": pm.CoefficientOfDetermination,
                      "PSNR": pm.PeakSignalToNoiseRatio}.items():
        metric = cls()
        metric.reference, metric.prediction = ref, pred
        ours = ev.compute_metrics(ref, pred, metrics=[name])[name]
        assert ours == pytest.approx(float(metric.calculate()), rel=1e-9), name


@pytest.mark.parametrize("shape", [(32, 40), (12, 20, 24)])
def test_ssim_matches_skimage(shape):
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(5)
    ref = ndimage.gaussian_filter(rng.normal(0, 100, shape), 1.5) - 1024 * (rng.random(shape) < 0.1)
    pred = ref + rng.normal(0, 20, shape)
    expected = skm.structural_similarity(ref, pred, data_range=ref.max() - ref.min())
    assert ev.structural_similarity(ref, pred) == pytest.approx(expected, abs=1e-9)


# --------------------------------------------------------------------------- surface-distance (DeepMind)
@pytest.mark.parametrize("name,ref,pred", CASES_3D, ids=IDS_3D)
def test_dice_matches_surface_distance(name, ref, pred):
    expected = surface_distance.compute_dice_coefficient(ref, pred)
    ours = ev.dice(ev.confusion(ref, pred))
    if (ref | pred).any():
        assert ours == pytest.approx(expected, abs=TOL)
    else:
        assert math.isnan(expected) and ours == 1.0        # our convention: both empty -> 1, never NaN


def test_surfel_metrics_agree_approximately_on_smooth_organs():
    """Area-weighted corner-grid surfels (surface-distance) vs equal-weight surface voxels (ours).

    Measured on this pair at spacing (2.5, 0.8, 0.8): surface Dice at 1 mm is 0.43 (ours) vs 0.64
    (surfels) -- tolerances below the voxel size are dominated by where the surface is placed --
    while at tolerances >= the slice thickness both are 1; HD agrees to within a voxel."""
    shape, spacing = (40, 64, 64), (2.5, 0.8, 0.8)
    ref = ellipsoid(shape, (20, 32, 32), (8, 20, 16))
    pred = ellipsoid(shape, (21, 33, 31), (8, 19, 17))
    sd = surface_distance.compute_surface_distances(ref, pred, spacing)
    d = ev.surface_distances(ref, pred, spacing)
    for tol in (3.0, 5.0):
        assert ev.surface_dice(d, tol) == pytest.approx(
            surface_distance.compute_surface_dice_at_tolerance(sd, tol), abs=0.02)
    assert ev.surface_dice(d, 1.0) < surface_distance.compute_surface_dice_at_tolerance(sd, 1.0) - 0.1
    assert ev.hausdorff_distance(d) == pytest.approx(surface_distance.compute_robust_hausdorff(sd, 100),
                                                     abs=max(spacing))
    assert ev.hausdorff_distance(d, 95) == pytest.approx(surface_distance.compute_robust_hausdorff(sd, 95),
                                                         abs=max(spacing))
    assert ev.average_surface_distance(d) == pytest.approx(
        np.mean(surface_distance.compute_average_surface_distance(sd)), abs=max(spacing))


SURFEL_CASES = [(name, ref, pred) for name, ref, pred in CASES_3D + CASES_2D if ref.any() and pred.any()]


@pytest.mark.parametrize("name,ref,pred", SURFEL_CASES, ids=[c[0] for c in SURFEL_CASES])
@pytest.mark.parametrize("spacing", [(2.5, 0.8, 0.6), (0.7, 3.1, 1.3)], ids=["slices", "oblique"])
def test_surfel_surface_dice_equals_surface_distance(name, ref, pred, spacing):
    "SURFELDICE is surface-distance's surface Dice (same surfels, areas and distances) within 1e-6."
    spacing = spacing[-ref.ndim:]
    sd = surface_distance.compute_surface_distances(ref, pred, spacing)
    s = ev.surfels(ref, pred, spacing)
    assert s.reference_areas.sum() == pytest.approx(sd["surfel_areas_gt"].sum(), rel=TOL)
    assert s.prediction_areas.sum() == pytest.approx(sd["surfel_areas_pred"].sum(), rel=TOL)
    for tol in (0.5, 1.0, 2.0, 4.0):
        expected = surface_distance.compute_surface_dice_at_tolerance(sd, tol)
        assert ev.surfel_surface_dice(s, tol) == pytest.approx(expected, abs=TOL), tol
    assert ev.compute_metrics(ref, pred, spacing, ["nsd"])["SURFELDICE"] == pytest.approx(
        surface_distance.compute_surface_dice_at_tolerance(sd, 1.0), abs=TOL)


def test_surfel_area_table_equals_surface_distance_for_every_code():
    "All 256 cell codes at an anisotropic spacing (the oracle orders a cell's bits the other way round)."
    from surface_distance import lookup_tables
    spacing = (2.5, 0.8, 0.6)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    weights = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])      # their code of a 2×2×2 cell
    ours = ev.surfel_area_table(spacing)
    for code in range(256):
        cell = ev._cell(code, 3)
        assert ours[code] == pytest.approx(theirs[int((cell * weights).sum())], abs=TOL), code


# --------------------------------------------------------------------------- conventions, never NaN
def degenerate_pairs():
    shape = (6, 7, 8)
    empty, full = np.zeros(shape, bool), np.ones(shape, bool)
    blob = np.zeros(shape, bool); blob[2:4, 2:5, 3:6] = True
    return {"both empty": (empty, empty), "reference empty": (empty, blob), "prediction empty": (blob, empty),
            "both full": (full, full), "reference full": (full, blob), "single voxel each": single_voxel_pair(shape)}


@pytest.mark.parametrize("case", list(degenerate_pairs()))
def test_no_metric_returns_nan(case):
    ref, pred = degenerate_pairs()[case]
    label_metrics = [m.name for m in ev.METRICS.values() if m.kind == "label"]
    values = ev.compute_metrics(ref, pred, (2.5, 0.8, 0.8), label_metrics)
    assert not any(math.isnan(v) for v in values.values()), {k: v for k, v in values.items() if math.isnan(v)}
    infinite = {k for k, v in values.items() if math.isinf(v)}
    assert infinite <= {"PROBDST", "MAHLNBS"}, infinite      # the only metrics without a finite worst value


def test_empty_conventions_table():
    pairs = degenerate_pairs()
    diagonal = math.sqrt((6 * 2.5) ** 2 + (7 * 0.8) ** 2 + (8 * 0.8) ** 2)
    names = ["DICE", "JACRD", "SNSVTY", "PRCISON", "HDRFDST", "HDRFDST95", "AVGDIST", "SURFDICE", "KAPPA", "ADJRIND"]
    get = lambda case: ev.compute_metrics(*pairs[case], (2.5, 0.8, 0.8), names)
    assert get("both empty") == dict(DICE=1, JACRD=1, SNSVTY=1, PRCISON=1, HDRFDST=0, HDRFDST95=0, AVGDIST=0,
                                     SURFDICE=1, KAPPA=1, ADJRIND=1)
    for case in ("reference empty", "prediction empty"):
        values = get(case)
        assert [values[k] for k in ("DICE", "JACRD", "SNSVTY", "PRCISON", "SURFDICE")] == [0] * 5
        assert values["HDRFDST"] == values["HDRFDST95"] == values["AVGDIST"] == pytest.approx(diagonal)
    assert ev.compute_metrics(*pairs["both full"], (1, 1, 1), ["SPCFTY", "FALLOUT"]) == dict(SPCFTY=1, FALLOUT=0)


def test_mahalanobis_singular_covariance_is_finite():
    ref, pred = single_voxel_pair()
    value = ev.mahalanobis_distance(ref, pred, (1, 1, 1))
    # pooled covariance = one voxel's (1/12 I): distance = |delta| * sqrt(12)
    assert value == pytest.approx(np.linalg.norm([2, 2, -2]) * math.sqrt(12))


# --------------------------------------------------------------------------- post-processing vs SimpleITK
def component_scene():
    "Blobs of distinct sizes, single voxels, and two voxels touching only by a corner."
    mask = np.zeros((20, 60, 60), bool)
    for i, radius in enumerate([5.0, 4.0, 3.2, 2.5, 1.8]):
        mask |= ellipsoid(mask.shape, (10, 7 + 11 * i, 7 + 11 * i), (radius, radius, radius))
    mask[1, 1, 1] = mask[2, 2, 2] = True          # one component only with full connectivity
    mask[18, 58, 2] = mask[18, 2, 58] = True
    return mask


def test_keep_largest_and_remove_small_match_simpleitk():
    mask = component_scene()
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.ConnectedComponent(image, True)                       # full connectivity
    ranked = sitk.GetArrayFromImage(sitk.RelabelComponent(components, sortByObjectSize=True))
    sizes = np.bincount(ranked.ravel())[1:]
    assert len(sizes) == 8 and len(set(sizes[:5])) == 5                    # distinct sizes: no ties
    np.testing.assert_array_equal(ev.keep_largest_components(mask.astype(np.uint8)), (ranked == 1).astype(np.uint8))
    np.testing.assert_array_equal(ev.keep_largest_components(mask.astype(np.uint8), keep=3) > 0,
                                  (ranked >= 1) & (ranked <= 3))
    spacing = (2.0, 1.0, 0.5)
    for min_voxels in (2, 3, int(sizes[3]) + 1):
        kept = sitk.GetArrayFromImage(sitk.RelabelComponent(components, minimumObjectSize=min_voxels)) > 0
        out = ev.remove_small_components(mask.astype(np.uint8), min_voxels * np.prod(spacing) - 1e-9, spacing)
        np.testing.assert_array_equal(out > 0, kept)
        fraction = (min_voxels - 1e-9) / mask.sum()                       # the same size, relative to all foreground
        np.testing.assert_array_equal(ev.remove_small_components(mask.astype(np.uint8), min_fraction=fraction) > 0,
                                      kept)
    face = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(image, False), minimumObjectSize=2)) > 0
    np.testing.assert_array_equal(ev.remove_small_components(mask, 1.5, (1, 1, 1), connectivity=1) > 0, face)


def test_fill_holes_matches_simpleitk():
    shell = ellipsoid((20, 30, 30), (10, 15, 15), (8, 12, 12)) & ~ellipsoid((20, 30, 30), (10, 15, 15), (5, 8, 8))
    rng = np.random.default_rng(2)
    shell &= ~((rng.random(shell.shape) < 0.05) & ndimage.binary_erosion(shell, iterations=1))
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(shell.astype(np.uint8)), False)) > 0
    np.testing.assert_array_equal(ev.fill_holes(shell.astype(np.uint8)) > 0, filled)


# --------------------------------------------------------------------------- files and CLI
@pytest.fixture
def kits_folders(tmp_path):
    spacing = (3.0, 0.8, 0.75)
    affine = affine_from_spacing(spacing, orientation="LPS")
    pairs = {}
    for i in range(3):
        ref = np.zeros((16, 24, 20), np.uint8)
        ref[ellipsoid(ref.shape, (8, 12, 10), (5, 8, 6))] = 1
        ref[ellipsoid(ref.shape, (8, 12, 8), (2, 3, 3))] = 2
        pred = np.roll(ref, i, axis=1)
        save_nifti(tmp_path / "ref" / f"case_{i:05d}" / "segmentation.nii.gz", ref, affine)
        save_nifti(tmp_path / "pred" / f"case_{i:05d}" / "prediction.nii.gz", pred, affine)
        save_nifti(tmp_path / "flat_ref" / f"case_{i:05d}.nii.gz", ref, affine)
        save_nifti(tmp_path / "flat_pred" / f"case_{i:05d}.nii.gz", pred, affine)
        pairs[f"case_{i:05d}"] = (ref, pred)
    return tmp_path, spacing, pairs


def test_evaluate_paths_layouts_and_spacing(kits_folders):
    root, spacing, pairs = kits_folders
    kits = ev.evaluate_paths(root / "ref", root / "pred", labels=[1, 2], metrics=["DICE", "HDRFDST95"])
    flat = ev.evaluate_paths(root / "flat_ref", root / "flat_pred", labels=[1, 2], metrics=["DICE", "HDRFDST95"])
    pd.testing.assert_frame_equal(kits, flat)
    ref, pred = pairs["case_00002"]
    hd95 = kits.query("case == 'case_00002' and label == '1' and metric == 'HDRFDST95'").value.item()
    assert hd95 == pytest.approx(medpy_binary.hd95(pred == 1, ref == 1, spacing), abs=1e-5)   # header spacing (float32)


def test_evaluate_paths_writes_csvs(kits_folders):
    root, _, _ = kits_folders
    out = root / "results" / "metrics.csv"
    table = ev.evaluate_paths(root / "ref", root / "pred", labels=ev.KITS19_REGIONS, metrics=["dice"], out=out)
    written = pd.read_csv(out, dtype={"label": str})
    assert list(written.columns) == ["case", "label", "metric", "value"]
    np.testing.assert_allclose(written.value, table.value)
    stats = pd.read_csv(root / "results" / "metrics_statistics.csv")
    assert set(stats.columns) == {"label", "metric", "mean", "std", "median", "min", "max", "count"}
    assert stats["count"].tolist() == [3, 3]
    assert not list((root / "results").glob(".*tmp*"))                    # no temporary files left


def test_evaluate_paths_bad_input(kits_folders, tmp_path):
    root, spacing, _ = kits_folders
    pred = root / "pred" / "case_00000" / "prediction.nii.gz"
    before = pred.read_bytes()
    for out in (pred, root / "pred" / "metrics.nii.gz"):                # an input file, or an image name
        with pytest.raises(ValueError, match="Give a CSV file for the metrics"):
            ev.evaluate_paths(root / "ref", root / "pred", out=out)
    assert pred.read_bytes() == before and not (root / "pred" / "metrics.nii.gz").exists()
    save_nifti(tmp_path / "other" / "case_00000" / "prediction.nii.gz",
               np.zeros((16, 24, 20), np.uint8), affine_from_spacing(spacing, orientation="RAS"))
    with pytest.raises(ValueError, match="oriented RAS"):
        ev.evaluate_paths(root / "ref" / "case_00000" / "segmentation.nii.gz",
                          tmp_path / "other" / "case_00000" / "prediction.nii.gz")
    with pytest.raises(ValueError, match="unknown metric 'DCIE'. Did you mean DICE"):
        ev.evaluate_paths(root / "ref", root / "pred", metrics=["DCIE"])
    with pytest.raises(ValueError, match="occurs in no reference or prediction"):
        ev.evaluate_paths(root / "ref", root / "pred", labels=[7], metrics=["DICE"])
    with pytest.raises(ValueError, match="give two files or two folders"):
        ev.evaluate_paths(root / "ref", root / "pred" / "case_00000" / "prediction.nii.gz")
    save_nifti(tmp_path / "prob" / "case_00000.nii.gz", np.full((16, 24, 20), 0.5, np.float32),
               affine_from_spacing(spacing, orientation="LPS"))
    prob = tmp_path / "prob" / "case_00000.nii.gz"
    with pytest.raises(ValueError, match=f"prediction {re.escape(str(prob))}: has non-integer values"):
        ev.evaluate_paths(root / "flat_ref" / "case_00000.nii.gz", prob)        # the file is named
    assert ev.evaluate_paths(root / "flat_ref" / "case_00000.nii.gz", prob, metrics=["MAE"])["value"].notna().all()
    # (nibabel repairs zero pixdim on load, so non-positive spacing is checked on arrays)
    ref = np.ones((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="every voxel size must be a positive number"):
        ev.evaluate_case(ref, ref, spacing=(0, 1, 1), metrics=["HDRFDST95"])
    with pytest.raises(ValueError, match="spacing is missing"):
        ev.evaluate_case(ref, ref, spacing=None, metrics=["AVGDIST"])


def test_cli_evaluate(kits_folders, capsys):
    cli = pytest.importorskip("miscnn_lite.cli")
    root, _, _ = kits_folders
    out = root / "cli" / "metrics.csv"
    rc = cli.main(["evaluate", "--reference", str(root / "ref"), "--prediction", str(root / "pred"),
                   "--labels", "1,2", "--metrics", "DICE,HDRFDST95,AVGDIST", "--out", str(out)])
    assert rc == 0
    table = pd.read_csv(out)
    assert len(table) == 3 * 2 * 3 and set(table.metric) == {"DICE", "HDRFDST95", "AVGDIST"}
    assert (root / "cli" / "metrics_statistics.csv").exists()


def test_absorb_components_returns_a_copy_and_refuses_thresholds_that_switch_it_off():
    from miscnn_lite.evaluation import absorb_components
    from miscnn_lite.io import MiscnnError
    label_map = np.zeros((1, 6, 6), np.uint8)
    label_map[0, :3, :3], label_map[0, 1, 1], label_map[0, 5, 5] = 1, 2, 2
    same = absorb_components(label_map, label=2, into=1)                    # no rule: equal values, another array
    assert same is not label_map and np.array_equal(same, label_map)
    same[0, 0, 0] = 7
    assert label_map[0, 0, 0] == 1
    largest = absorb_components(label_map, label=2, into=1, largest_only=True)   # a tie: the first in C order stays
    assert largest[0, 1, 1] == 2 and largest[0, 5, 5] == 1
    for bad in (dict(min_volume_mm3=float("nan"), spacing=(1, 1, 1)), dict(min_volume_mm3=-5, spacing=(1, 1, 1)),
                dict(min_fraction=float("nan")), dict(min_fraction=1.5)):
        with pytest.raises(MiscnnError, match="must be"):
            absorb_components(label_map, label=2, into=1, **bad)
