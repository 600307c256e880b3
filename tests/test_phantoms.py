"""Heavier checks of miscnn_lite.phantoms: determinism, statistics over datasets, anatomy invariants,
files on disk (layout, orientation round trip through miscnn_lite.io, idempotency), the HU-threshold
baseline against brute force, bad inputs, the CLI, and import hygiene (no keras/tensorflow)."""
import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from miscnn_lite.io import open_dataset
from miscnn_lite.phantoms import (
    DEFAULT_SHAPE,
    INPLANE_SPACING_MM,
    MIN_SHAPE,
    SLICE_THICKNESS_MM,
    best_hu_window,
    describe_phantoms,
    fov_grid,
    generate_phantom,
    kidney_regions,
    make_phantom_dataset,
    phantom_dataset_plan,
    plan_phantom,
    window_dice,
)

SMALL = (24, 64, 64)


@pytest.fixture(scope="module")
def small_cases():
    "Twenty phantoms on a small grid (seed (7, i)), default tumor probability."
    return [generate_phantom((7, i), SMALL) for i in range(20)]


@pytest.mark.parametrize("seed", [0, 5, (3, 11)])
@pytest.mark.parametrize("orientation", ["SPL", None])
def test_deterministic_per_seed(seed, orientation):
    a = generate_phantom(seed, SMALL, orientation=orientation)
    b = generate_phantom(seed, SMALL, orientation=orientation)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.affine, b.affine) and a.id == b.id


def test_different_across_seeds(small_cases):
    images = [c.image for c in small_cases[:6]]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])
            # not just different noise: the label maps (anatomy) differ too
            assert not np.array_equal(small_cases[i].label, small_cases[j].label)
    assert len({c.spacing for c in small_cases}) > 5


def test_labels_dtypes_and_hu_range(small_cases):
    for c in small_cases:
        assert c.image.dtype == np.int16 and c.label.dtype == np.uint8 and c.shape == SMALL
        assert set(np.unique(c.label).tolist()) <= {0, 1, 2}
        assert (c.label == 1).sum() > 0                                # every case has kidneys
        assert c.image.min() >= -1024 and c.image.max() <= 3071
        assert c.image.min() < -900 and c.image.max() > 400            # air and bone are present


def test_spacing_in_stated_ranges():
    spacings = [plan_phantom((1, i), orientation=None)[1].spacing for i in range(300)]
    for sz, sy, sx in spacings:
        assert INPLANE_SPACING_MM[0] <= sy == sx <= INPLANE_SPACING_MM[1]
        assert 0.5 <= sz <= 5.0 and sz in SLICE_THICKNESS_MM
    thick = {s[0] for s in spacings}
    assert thick == set(SLICE_THICKNESS_MM)                            # every thickness is drawn
    inplane = np.array([s[1] for s in spacings])
    assert inplane.min() < 0.65 and inplane.max() > 0.95               # the range is covered
    # and the affine of the written case carries it
    case = generate_phantom((1, 0), SMALL)
    assert np.allclose(case.spacing, spacings[0])


def test_tumor_free_cases_in_a_dataset(tmp_path):
    root = make_phantom_dataset(tmp_path / "ds", n_cases=5, seed=2, shape=(16, 48, 48), progress=False)
    reader = open_dataset(root)
    tumor_voxels = [int((reader.load_label(cid) == 2).sum()) for cid in reader.case_ids]
    assert sum(v == 0 for v in tumor_voxels) == 1                      # round(5 * 0.2)
    assert sum(v > 0 for v in tumor_voxels) == 4
    for n, p in [(12, 0.8), (10, 0.5), (7, 1.0), (3, 0.0)]:
        plan = phantom_dataset_plan(n, seed=4, tumor_probability=p)
        assert sum(e["tumor_probability"] == 0 for e in plan) == round(n * (1 - p))


def test_standalone_tumor_probability():
    plans = [plan_phantom((9, i))[0] for i in range(400)]
    with_tumor = np.mean([len(a.tumors) > 0 for a in plans])
    assert 0.74 <= with_tumor <= 0.86
    assert any(len(a.tumors) == 2 for a in plans)                      # multifocal / bilateral cases exist
    assert all(len(plan_phantom((9, i), tumor_probability=0)[0].tumors) == 0 for i in range(20))


def test_tumor_mostly_inside_kidney(small_cases):
    "Each tumor grows from inside a kidney: most of its voxels lie in the kidney's original ellipsoid."
    fractions = []
    for i, case in enumerate(small_cases):
        tumor = case.label == 2
        if not tumor.any():
            continue
        anatomy, _ = plan_phantom((7, i))
        grid = fov_grid(case.shape)
        kidney_region = np.zeros(case.shape, bool)
        for kidney in anatomy.kidneys:
            kidney_region |= kidney.radius(grid) < 1
        fractions.append((tumor & kidney_region).sum() / tumor.sum())
        # every tumor component touches kidney tissue
        components, n = ndimage.label(tumor)
        kidney = ndimage.binary_dilation(case.label == 1)
        for k in range(1, n + 1):
            assert (kidney & (components == k)).any(), f"case {i}: tumor component {k} is not on a kidney"
    assert len(fractions) >= 12
    assert min(fractions) > 0.3 and np.median(fractions) > 0.7, np.round(fractions, 2)


def test_tumor_sizes_vary(small_cases):
    kidney_voxels = np.median([(c.label == 1).sum() for c in small_cases])
    sizes = np.array([(c.label == 2).sum() for c in small_cases if (c.label == 2).any()])
    assert sizes.min() < 0.15 * kidney_voxels                          # some small tumors
    assert sizes.max() > 0.5 * kidney_voxels                           # some big ones
    assert sizes.min() >= 8                                            # but never a speck


def test_kidneys_visible_and_on_both_sides():
    "Default shape: each kidney is >= 8 voxels across in-plane; right kidney at low columns (SPL)."
    for s in range(10):
        anatomy, _ = plan_phantom(s)
        grid = fov_grid(DEFAULT_SHAPE)
        for side, kidney in zip(("right", "left"), anatomy.kidneys):
            mask = kidney_regions(kidney, grid)[0]
            k = int(np.argmax(mask.sum((1, 2))))
            rows, cols = np.nonzero(mask[k])
            assert min(np.ptp(rows), np.ptp(cols)) + 1 >= 8
            assert (cols.mean() < DEFAULT_SHAPE[2] / 2) == (side == "right")
            assert rows.mean() > DEFAULT_SHAPE[1] / 2                  # posterior half (rows point backwards)


def test_tumor_hu_overlaps_other_tissue(small_cases):
    "Tumor voxels are a small minority of the voxels within the tumor's own HU range."
    for c in small_cases[:8]:
        tumor = c.label == 2
        if not tumor.any():
            continue
        lo, hi = np.percentile(c.image[tumor], [25, 75])
        in_range = (c.image >= lo) & (c.image <= hi)
        assert (in_range & tumor).sum() / in_range.sum() < 0.2


def test_any_shape_works():
    for shape in [MIN_SHAPE, (20, 40, 56), (33, 70, 50)]:
        c = generate_phantom(3, shape, tumor_probability=1)
        assert c.shape == tuple(shape)
        assert set(np.unique(c.label).tolist()) == {0, 1, 2}
        cols = np.nonzero(c.label == 1)[2]
        assert cols.min() < shape[2] / 2 < cols.max()                  # both kidneys


def test_threshold_baseline_below_bound(small_cases):
    w = best_hu_window(small_cases, label=2)
    assert w.dice < 0.4, w
    per_case = [window_dice(c, w.lo_hu, w.hi_hu, 2) for c in small_cases if (c.label == 2).any()]
    assert np.mean(per_case) < 0.4
    # the window search is exact: no other window on the grid does better (spot-check around the optimum)
    for dlo in (-20, -10, 0, 10, 20):
        for dhi in (-20, -10, 0, 10, 20):
            lo, hi = w.lo_hu + dlo, w.hi_hu + dhi
            if hi > lo:
                pred = sum(((c.image >= lo) & (c.image < hi)).sum() for c in small_cases)
                tp = sum(((c.image >= lo) & (c.image < hi) & (c.label == 2)).sum() for c in small_cases)
                ref = sum((c.label == 2).sum() for c in small_cases)
                assert 2 * tp / (pred + ref) <= w.dice + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_best_hu_window_matches_brute_force(seed):
    from miscnn_lite.io import case_from_arrays
    rng = np.random.default_rng(seed)
    cases = [case_from_arrays(rng.integers(-40, 40, (3, 5, 5)).astype(np.int16),
                              rng.integers(0, 3, (3, 5, 5)).astype(np.uint8), case_id=f"c{k}") for k in range(2)]
    best = best_hu_window(cases, label=1, bin_hu=5, hu_range=(-40, 40))
    edges = range(-40, 41, 5)
    ref = sum((c.label == 1).sum() for c in cases)
    brute = 0.0
    for lo in edges:
        for hi in edges:
            if hi > lo:
                tp = sum(((c.image >= lo) & (c.image < hi) & (c.label == 1)).sum() for c in cases)
                pred = sum(((c.image >= lo) & (c.image < hi)).sum() for c in cases)
                brute = max(brute, 2 * tp / (pred + ref))
    assert best.dice == pytest.approx(brute, abs=1e-12)


def test_dataset_orientation_round_trip(tmp_path):
    "Files are stored in varied orientations; io reorients them back to the canonical SPL phantom."
    root = make_phantom_dataset(tmp_path / "ds", n_cases=8, seed=0, shape=(16, 40, 40), progress=False)
    raw = open_dataset(root, orientation=None)
    stored = {"".join(nib.aff2axcodes(nib.load(raw._paths(cid)[0]).affine)) for cid in raw.case_ids}
    assert "SPL" in stored and len(stored) > 1                        # some files are flipped
    plan = phantom_dataset_plan(8, seed=0)
    reader = open_dataset(root)
    for entry in plan:
        case = reader.load_case(entry["case_id"])
        canonical = generate_phantom(tuple(entry["seed"]), (16, 40, 40), tumor_probability=entry["tumor_probability"])
        assert case.orientation == "SPL"
        assert np.array_equal(case.image, canonical.image) and np.array_equal(case.label, canonical.label)
        assert np.allclose(case.affine, canonical.affine, atol=1e-4)
    manifest = json.loads((root / "phantoms.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == reader.case_ids
    assert manifest["shape"] == [16, 40, 40] and manifest["seed"] == 0


def test_dataset_idempotent_and_safe(tmp_path):
    root = tmp_path / "ds"
    kwargs = dict(n_cases=3, seed=1, shape=(12, 40, 40), progress=False)
    make_phantom_dataset(root, **kwargs)
    files = sorted(root.rglob("*.nii.gz"))
    assert len(files) == 6
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    make_phantom_dataset(root, **kwargs)
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes        # nothing rewritten
    # an interrupted run (segmentation missing) is completed, the other cases are left alone
    (root / "case_00001" / "segmentation.nii.gz").unlink()
    make_phantom_dataset(root, **kwargs)
    assert (root / "case_00001" / "segmentation.nii.gz").exists()
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in files if "case_00001" not in str(p))
    # growing the dataset only adds cases
    make_phantom_dataset(root, **{**kwargs, "n_cases": 4})
    assert (root / "case_00003" / "imaging.nii.gz").exists()
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in files if "case_00001" not in str(p))
    # shrinking it would leave a case its manifest does not list: refused, nothing written
    with pytest.raises(FileExistsError, match=r"holds 1 case\(s\) beyond the 3 of this dataset \(case_00003\)"):
        make_phantom_dataset(root, **kwargs)
    assert (root / "case_00003" / "imaging.nii.gz").exists()
    # a different case under the same name is never silently replaced
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_phantom_dataset(root, **{**kwargs, "seed": 2, "n_cases": 4})
    make_phantom_dataset(root, **{**kwargs, "seed": 2}, overwrite=True)
    assert open_dataset(root).case_ids == [f"case_{i:05d}" for i in range(3)]    # case_00003 removed
    assert not (root / "case_00003").exists()
    listed = [c["case_id"] for c in json.loads((root / "phantoms.json").read_text())["cases"]]
    assert listed == open_dataset(root).case_ids
    new = open_dataset(root).load_case("case_00000")
    assert np.array_equal(new.image, generate_phantom((2, 0), (12, 40, 40),
                                                      tumor_probability=phantom_dataset_plan(3,
                                                                                             2)[0]["tumor_probability"]).image)
    assert not list(root.rglob("*.tmp*"))                             # no temporary files left


def test_dataset_fixed_spacing(tmp_path):
    "spacing= gives every case one voxel size; the anatomy is unchanged (only the affine and z blur differ)."
    root = make_phantom_dataset(tmp_path / "ds", n_cases=3, shape=(12, 40, 40), spacing=(3.22, 1.62, 1.62),
                                progress=False)
    reader = open_dataset(root)
    for cid in reader.case_ids:
        assert np.allclose(reader.load_case(cid).spacing, (3.22, 1.62, 1.62), atol=1e-5)
    a, b = generate_phantom(4, (12, 40, 40), spacing=(3.22, 1.62, 1.62)), generate_phantom(4, (12, 40, 40))
    assert np.array_equal(a.label, b.label)
    assert json.loads((root / "phantoms.json").read_text())["spacing"] == [3.22, 1.62, 1.62]


def test_nnunet_layout(tmp_path):
    root = make_phantom_dataset(tmp_path / "nn", n_cases=2, shape=(12, 40, 40), layout="nnunet", progress=False)
    assert (root / "imagesTr" / "case_00000_0000.nii.gz").exists()
    assert (root / "labelsTr" / "case_00001.nii.gz").exists()
    assert open_dataset(root).case_ids == ["case_00000", "case_00001"]


def test_describe_phantoms(tmp_path):
    root = make_phantom_dataset(tmp_path / "ds", n_cases=3, seed=5, shape=(12, 40, 40), progress=False)
    table = describe_phantoms(root)
    assert list(table.columns) == ["case", "shape", "spacing_mm", "stored_orientation", "kidney_voxels",
                                   "tumor_voxels", "tumor_ml"]
    reader = open_dataset(root)
    for row, cid in zip(table.itertuples(), reader.case_ids):
        case = reader.load_case(cid)
        assert row.case == cid and row.shape == (12, 40, 40)
        assert row.tumor_voxels == (case.label == 2).sum()
        assert row.tumor_ml == pytest.approx((case.label == 2).sum() * np.prod(case.spacing) / 1000, abs=0.01)
        assert row.stored_orientation == "".join(nib.aff2axcodes(case.original_affine))


@pytest.mark.parametrize("call, error, message", [
    (lambda p: make_phantom_dataset(p / "ds", n_cases=-1, progress=False), ValueError, "n_cases -1"),
    (lambda p: make_phantom_dataset(p / "ds", n_cases=0, progress=False), ValueError, "positive number of cases"),
    (lambda p: make_phantom_dataset(p / "ds", n_cases=2.5, progress=False), ValueError, "n_cases 2.5"),
    (lambda p: make_phantom_dataset(p / "ds", shape=(48, 96), progress=False), ValueError, "three voxel counts"),
    (lambda p: make_phantom_dataset(p / "ds", shape=(48, 16, 96), progress=False), ValueError, "at least (8, 32, 32)"),
    (lambda p: make_phantom_dataset(p / "a_file.txt", progress=False), NotADirectoryError, "is a file"),
    (lambda p: make_phantom_dataset(p / "ds", layout="msd", progress=False), ValueError, "layout 'msd'"),
    (lambda p: make_phantom_dataset(p / "ds", tumor_probability=-0.1, progress=False), ValueError, "[0, 1]"),
    (lambda p: make_phantom_dataset(p / "ds", spacing=(0, 1, 1), progress=False), ValueError,
     "must be a positive number of mm"),
    (lambda p: generate_phantom(0, shape=(48, 96, 96, 1)), ValueError, "three voxel counts"),
    (lambda p: generate_phantom(0, spacing=(-1, 1, 1)), ValueError, "must be a positive number of mm"),
    (lambda p: generate_phantom("zero"), ValueError, "non-negative int"),
    (lambda p: generate_phantom(0, orientation="SP"), ValueError, "three letters"),
])
def test_bad_inputs(tmp_path, call, error, message):
    (tmp_path / "a_file.txt").write_text("not a folder")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]",
                                                                                                                r"\]")):
        call(tmp_path)
    assert not (tmp_path / "ds").exists()                            # nothing written on a bad call


def test_cli_phantoms(tmp_path):
    from miscnn_lite.cli import main
    assert main(["phantoms", "--out", str(tmp_path / "cli"), "--cases", "2", "--seed", "3",
                 "--shape", "12", "40", "40", "--quiet"]) == 0
    reader = open_dataset(tmp_path / "cli")
    assert reader.case_ids == ["case_00000", "case_00001"]
    assert reader.load_case("case_00000").shape == (12, 40, 40)


def test_import_does_not_load_keras():
    code = ("import sys, miscnn_lite.phantoms; "
            "print(any(m.split('.')[0] in ('keras', 'tensorflow', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_phantoms_are_unchanged():
    """The README's numbers rest on these arrays: the default phantom and a drawn-orientation non-contrast one
    hash as they did before the pelvis (drawn from a stream of its own) was added."""
    import hashlib
    expected = {0: "e659c030abd122c9e19224c121558ff73245936ea6a7d06a256c9e42bc66ac87",
                (0, 5): "640853469dd524c66dcd83d452ebe869ce4d3c455accd84a81646f213d96bbad"}
    cases = {0: generate_phantom(0),
             (0, 5): generate_phantom((0, 5), shape=(40, 64, 64), orientation=None, contrast_phase="non_contrast")}
    for seed, case in cases.items():
        data = case.image.tobytes() + case.label.tobytes() + np.asarray(case.affine).tobytes()
        assert hashlib.sha256(data).hexdigest() == expected[seed], seed


def test_isoattenuating_tumors_stay_in_their_phase_range():
    "An 'iso' tumor is drawn up to 40 HU under the cortex, but never under the phase's tumor range (fat-dense)."
    from miscnn_lite.phantoms import TUMOR_HU, Ellipsoid, sample_tumors
    kidneys = [Ellipsoid((0.0, 0.2, -0.4), (0.3, 0.15, 0.1)), Ellipsoid((0.0, 0.2, 0.4), (0.3, 0.15, 0.1))]
    for phase, cortex in (("non_contrast", 22.0), ("venous", 170.0)):
        hus = [t.hu for s in range(300) for t in sample_tumors(np.random.default_rng(s), kidneys, cortex, 1.0, phase)]
        assert min(hus) >= TUMOR_HU[phase][0]
        iso = [h for h in hus if h > TUMOR_HU[phase][1]] if phase == "venous" else [h for h in hus if h == 15.0]
        assert len(iso) > 10                          # the iso tumors are there (clipped ones at the floor)


def test_another_layout_in_the_folder_is_refused_or_replaced(tmp_path):
    "The manifest must describe what the readers open: phantoms of another layout are not left beside new ones."
    kwargs = dict(n_cases=2, shape=(16, 48, 48), progress=False)
    make_phantom_dataset(tmp_path / "ds", layout="nnunet", **kwargs)
    with pytest.raises(FileExistsError, match="holds 2 case\\(s\\) in another layout \\(NnUNetReader\\)"):
        make_phantom_dataset(tmp_path / "ds", layout="kits19", contrast_phase="non_contrast", **kwargs)
    assert not (tmp_path / "ds" / "case_00000").exists()
    make_phantom_dataset(tmp_path / "ds", layout="kits19", contrast_phase="non_contrast", overwrite=True, **kwargs)
    assert type(open_dataset(tmp_path / "ds")).__name__ == "KiTS19Reader"
    assert not list((tmp_path / "ds").glob("imagesTr/*.nii.gz"))


@pytest.mark.parametrize("kwargs, says", [(dict(shape=(16.7, 48, 48)), "shape (16.7, 48, 48)"),
                                          (dict(shape=(16, 48, "x")), "shape (16, 48, 'x')"),
                                          (dict(tumor_probability=None), "tumor_probability None"),
                                          (dict(tumor_probability=True), "tumor_probability True"),
                                          (dict(spacing=(1, 1, 1e6)), "outside the plausible")])
def test_generator_arguments_are_named(kwargs, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        generate_phantom(0, **{"shape": (16, 48, 48), **kwargs})


def test_overwrite_never_replaces_data_it_did_not_write(tmp_path):
    "A KiTS19 folder of someone's cases (no phantoms.json): overwrite=True refuses, every file stays."
    from dataclasses import replace

    from miscnn_lite.io import save_case
    from miscnn_lite.phantoms import toy_case
    real = tmp_path / "real"
    for i in range(3):
        save_case(replace(toy_case(i), id=f"case_{i:05d}"), real)
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="3 case\\(s\\) this generator did not write"):
        make_phantom_dataset(real, n_cases=1, shape=(8, 32, 32), progress=False, overwrite=True)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before


def test_interrupted_run_leaves_a_manifest_marked_incomplete(tmp_path, monkeypatch):
    import miscnn_lite.phantoms as phantoms
    root = tmp_path / "ds"
    kwargs = dict(n_cases=3, shape=(8, 32, 32), progress=False)
    make_phantom_dataset(root, seed=0, **kwargs)
    assert json.loads((root / "phantoms.json").read_text())["complete"] is True
    real_save = phantoms.save_case

    def interrupted(case, out, layout):                 # the second case never arrives
        if case.id == "case_00001":
            raise KeyboardInterrupt
        real_save(case, out, layout=layout)
    monkeypatch.setattr(phantoms, "save_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_phantom_dataset(root, seed=1, overwrite=True, **kwargs)
    manifest = json.loads((root / "phantoms.json").read_text())
    assert (manifest["seed"], manifest["complete"]) == (1, False)      # not seed 0's record over seed 1's case
    monkeypatch.setattr(phantoms, "save_case", real_save)
    make_phantom_dataset(root, seed=1, overwrite=True, **kwargs)       # finishes the job
    assert json.loads((root / "phantoms.json").read_text())["complete"] is True
    first = phantom_dataset_plan(3, 1)[0]
    expected = generate_phantom(tuple(first["seed"]), (8, 32, 32), tumor_probability=first["tumor_probability"])
    assert np.array_equal(open_dataset(root).load_case("case_00000").image, expected.image)


def test_manifest_records_each_drawn_contrast_phase(tmp_path):
    root = make_phantom_dataset(tmp_path / "ds", n_cases=6, seed=7, shape=(8, 32, 32), contrast_phase="random",
                                progress=False)
    cases = json.loads((root / "phantoms.json").read_text())["cases"]
    drawn = [plan_phantom(tuple(c["seed"]), c["tumor_probability"], contrast_phase="random")[0].contrast_phase
             for c in cases]
    assert [c["contrast_phase"] for c in cases] == drawn and len(set(drawn)) > 1


def test_nnunet_layout_has_nnunets_dataset_json(tmp_path):
    from miscnn_lite.io import dataset_class_names
    root = make_phantom_dataset(tmp_path / "nn", n_cases=2, shape=(8, 32, 32), layout="nnunet", context=True,
                                progress=False)
    description = json.loads((root / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "CT"} and description["numTraining"] == 2
    assert description["file_ending"] == ".nii.gz" and description["labels"]["bladder"] == 7
    assert dataset_class_names(root)[:3] == ["background", "kidney", "tumor"]
    make_phantom_dataset(root, n_cases=2, shape=(8, 32, 32), context=True, progress=False, overwrite=True)
    assert not (root / "dataset.json").exists() and open_dataset(root).case_ids == ["case_00000", "case_00001"]


def test_pictures_and_volumes_keep_to_their_own_folders(tmp_path):
    from miscnn_lite.phantoms import make_picture_dataset
    pics = make_picture_dataset(tmp_path / "pics", n_cases=3, shape=(8, 32, 32))
    before = {p: p.read_bytes() for p in pics.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="spacing"):      # checked before a picture is removed
        make_picture_dataset(pics, n_cases=1, shape=(8, 32, 32), spacing=(0, 1, 1), overwrite=True)
    with pytest.raises(ValueError, match="spacing=None"):
        make_picture_dataset(pics, n_cases=1, shape=(8, 32, 32), spacing=None, overwrite=True)
    with pytest.raises(ValueError, match="no colour for class"):
        make_picture_dataset(pics, n_cases=1, shape=(8, 32, 32), colors={0: "#000000", 1: "#ff0000"}, overwrite=True)
    with pytest.raises(FileExistsError, match="picture dataset"):
        make_phantom_dataset(pics, n_cases=1, shape=(8, 32, 32), progress=False)
    assert {p: p.read_bytes() for p in pics.rglob("*") if p.is_file()} == before
    volumes = make_phantom_dataset(tmp_path / "vol", n_cases=1, shape=(8, 32, 32), progress=False)
    with pytest.raises(FileExistsError, match="3D cases"):
        make_picture_dataset(volumes, n_cases=1, shape=(8, 32, 32))
    assert not (volumes / "images").exists()
    (pics / "masks" / "case_00002.png").unlink()         # an interrupted run: finished by the same call
    sidecar = json.loads((pics / "dataset.json").read_text())
    (pics / "dataset.json").write_text(json.dumps({**sidecar, "complete": False}))
    make_picture_dataset(pics, n_cases=3, shape=(8, 32, 32))
    assert {p: p.read_bytes() for p in pics.rglob("*.png")} == {p: b for p, b in before.items() if p.suffix == ".png"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dataset.json").write_text('{"name": "mine"}')
    with pytest.raises(FileExistsError, match="written by something else"):
        make_picture_dataset(foreign, n_cases=1, shape=(8, 32, 32))
    assert (foreign / "dataset.json").read_text() == '{"name": "mine"}'


@pytest.mark.parametrize("call, message", [
    (lambda: generate_phantom(2**32), "below 2\\*\\*32"),
    (lambda: generate_phantom(0, fov_z="12"), "fov_z '12'"),
    (lambda: generate_phantom(0, fov_z=(True, 2)), "fov_z"),
    (lambda: generate_phantom(0, kidney_scale="1.5"), "kidney_scale '1.5'"),
    (lambda: generate_phantom(0, kidney_scale=2.0), "\\[0.5, 1.5\\]"),
    (lambda: generate_phantom(0, myosteatosis="0.3"), "myosteatosis '0.3'"),
    (lambda: generate_phantom(0, spacing=(True, 1, 1)), "expected voxel sizes"),
    (lambda: generate_phantom(0, case_id=""), "case_id ''"),
    (lambda: make_phantom_dataset(""), "empty name"),
    (lambda: make_phantom_dataset(None), "out_dir None"),
])
def test_more_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_anatomy_outside_the_field_of_view_warns():
    with pytest.warns(UserWarning, match="no kidney label"):
        case = generate_phantom(0, (8, 32, 32), fov_z=(-3, -1.5))
    assert not (case.label == 1).any()
    with pytest.warns(UserWarning, match="same as with pelvis='simple'"):
        adult = generate_phantom(0, (8, 32, 32), pelvis="adult")
    assert np.array_equal(adult.image, generate_phantom(0, (8, 32, 32)).image)
