"""Tests of miscnn_lite.visualization that need files, processes or more time than a notebook cell:
viewers from NIfTI paths with a flipped orientation, every widget control redrawing exactly once,
exact error-map colours in the displayed PNG, the static-HTML fallback through nbconvert, GIFs
and the results browser on a written results folder."""
import base64
import os
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

from miscnn_lite.io import affine_from_spacing, case_from_arrays, load_case, save_case, save_prediction
from miscnn_lite.visualization import (
    ERROR_COLORS,
    WINDOW_PRESETS,
    PatchExplorer,
    ResultsBrowser,
    SliceViewer,
    display_shape,
    error_categories,
    mosaic,
    overlay_figure,
    render_view,
    resize_nearest,
    save_gif,
    viewer_data,
    window_to_uint8,
)

ROOT = Path(__file__).resolve().parents[1]


def png_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def blob_case(shape=(12, 20, 24), spacing=(2.5, 0.8, 0.8), orientation="SPL", case_id="blob"):
    "A small CT-like case with a kidney (1) and a tumour (2) cube, given affine orientation."
    rng = np.random.default_rng(0)
    image = rng.normal(30, 10, shape).astype(np.int16)
    image[:, :2] = -1000                                       # air, so the default window is CT
    label = np.zeros(shape, np.uint8)
    label[3:9, 5:15, 4:12] = 1
    label[5:7, 8:11, 6:9] = 2
    image[label == 1] += 150
    return case_from_arrays(image, label, affine=affine_from_spacing(spacing, orientation), case_id=case_id)


# ---- inputs from files ---------------------------------------------------------------------------
def test_viewer_from_paths_matches_case_and_reorients_prediction(tmp_path):
    # a case stored flipped (IAR): load_case reorients to SPL; the prediction file written by
    # save_prediction is in the file's orientation and must land back on the SPL grid in the viewer
    case = blob_case(orientation="IAR")
    image_path = save_case(case, tmp_path / "data")
    loaded = load_case(image_path, image_path.parent / "segmentation.nii.gz")
    assert loaded.orientation == "SPL"
    prediction = np.roll(loaded.label, 1, axis=2)
    pred_path = save_prediction(prediction, loaded, tmp_path / "pred.nii.gz")

    from_folder = SliceViewer(image_path.parent, prediction=pred_path)
    np.testing.assert_array_equal(from_folder.data.image, loaded.image)
    np.testing.assert_array_equal(from_folder.data.label, loaded.label)
    np.testing.assert_array_equal(from_folder.data.prediction, prediction)
    assert from_folder.data.name == "blob"
    from_file = SliceViewer(image_path, label=image_path.parent / "segmentation.nii.gz")
    np.testing.assert_array_equal(from_file.data.label, loaded.label)
    assert from_file.data.spacing == pytest.approx(loaded.spacing)
    with pytest.raises(FileNotFoundError, match="must hold imaging.nii.gz"):
        SliceViewer(tmp_path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        SliceViewer(tmp_path / "nothing.nii.gz")


# ---- widget logic ----------------------------------------------------------------------------------
def test_every_control_redraws_exactly_once_and_changes_the_picture():
    case = blob_case()
    v = SliceViewer(case, prediction=np.roll(case.label, 1, axis=1))
    changes = [(v.slice_slider, 4), (v.axis_buttons, 1), (v.slice_slider, 9), (v.axis_buttons, 2),
               (v.view_buttons, "errors"), (v.view_buttons, "truth"), (v.preset, "bone"), (v.level_slider, 150.0),
               (v.width_slider, 250.0), (v.opacity_slider, 0.9), (v.class_toggles[1], False),
               (v.row_slider, 2), (v.col_slider, 3), (v.crosshair, False)]
    for widget, value in changes:
        before, n = v.image_widget.value, v.n_redraws
        widget.value = value
        assert v.n_redraws == n + 1, f"{widget.description}={value!r} redrew {v.n_redraws - n} times"
        assert v.image_widget.value != before, f"{widget.description}={value!r} did not change the picture"
    assert v.preset.value == "custom" and v.window == (150.0, 250.0)
    assert v.axis == 2 and v.cursor[:2] == [2, 3]             # sagittal: the in-plane sliders move z and y


def test_displayed_png_is_the_asked_slice_and_window():
    case = blob_case()
    v = SliceViewer(case, view="image", window="kidney")
    v.crosshair.value = False
    for index in (0, 5, 11):
        v.slice_slider.value = index
        shown = png_array(v.image_widget.value)
        expected = window_to_uint8(case.image[index], *WINDOW_PRESETS["kidney"])
        np.testing.assert_array_equal(shown[..., 0], resize_nearest(expected, shown.shape[:2]))
    assert shown.shape[:2] == display_shape(case.shape[1:], case.spacing[1:], v.size)


def test_error_map_colours_in_the_widget_on_a_hand_made_case():
    # one axial slice, 1×4 voxels: FP, TP, FN, wrong class
    image = np.zeros((1, 1, 4), np.int16)
    truth = np.array([[[0, 1, 1, 2]]], np.uint8)
    pred = np.array([[[1, 1, 0, 1]]], np.uint8)
    v = SliceViewer(image, label=truth, prediction=pred, view="errors", opacity=1.0, window=(0, 10), size=4)
    v.crosshair.value = False
    shown = png_array(v.image_widget.value)
    assert shown.shape == (1, 4, 3)
    expected = [ERROR_COLORS[k] for k in ("false positive", "true positive", "false negative", "wrong class")]
    np.testing.assert_array_equal(shown[0], expected)
    v.class_toggles[2].value = False            # tumour hidden: truth 2 counts as background, prediction 1
    shown = png_array(v.image_widget.value)     # there is then a false positive
    np.testing.assert_array_equal(shown[0, 3], ERROR_COLORS["false positive"])


def test_coronal_view_puts_the_head_on_top():
    image = np.zeros((10, 4, 6), np.int16)
    image[-1] = 1000                                           # the most superior slice in SPL
    v = SliceViewer(case_from_arrays(image), view="image", axis=1, window=(500, 1000), size=0)
    v.crosshair.value = False
    shown = png_array(v.image_widget.value)[..., 0]
    assert shown[0].min() == 255 and shown[1:].max() == 0


def test_viewer_readout_and_world_position():
    case = blob_case()
    v = SliceViewer(case, cursor=(5, 9, 7))
    world = case.affine @ np.array([5, 9, 7, 1.0])
    text = v.describe_cursor()
    assert f"value</b> {case.image[5, 9, 7]}" in text and "truth</b> 2 (tumor)" in text
    assert f"({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) mm" in text
    with pytest.raises(ValueError, match="index 40 on axis 1 is outside 0..19"):
        SliceViewer(case, cursor=(0, 40, 0))


# ---- bad input ------------------------------------------------------------------------------------
def test_bad_inputs_have_clear_errors():
    case = blob_case()
    with pytest.raises(ValueError, match=r"label shape \(12, 20, 23\) differs from image shape \(12, 20, 24\)"):
        SliceViewer(case.image, label=case.label[..., :-1])
    with pytest.raises(ValueError, match="4D array with 2 channels"):
        SliceViewer(np.zeros((4, 5, 6, 2)))
    with pytest.raises(ValueError, match="view='errors' needs a prediction"):
        SliceViewer(case, view="errors")
    with pytest.raises(ValueError, match="negative values"):
        viewer_data(case.image, label=-case.label.astype(int))
    with pytest.raises(ValueError, match="2 values are for a 2D image; this volume has 12 slices"):
        viewer_data(case.image, spacing=(0.8, 0.8))
    with pytest.raises(ValueError, match=r"cursor=\(1, 2\): give one voxel as \(z, y, x\)"):
        SliceViewer(case, cursor=(1, 2))
    with pytest.raises(ValueError, match="axis=3: expected 0"):
        SliceViewer(case, axis=3)
    with pytest.raises(ValueError, match="window level nan"):
        SliceViewer(case, window=(float("nan"), 400))
    for opacity in (2, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"opacity=.*: expected a number in \[0, 1\]"):
            SliceViewer(case, opacity=opacity)


def test_a_case_in_another_orientation_is_shown_with_its_maps_aligned(tmp_path):
    "A RAS case read without reorienting: image, label file and prediction array land on the same voxel, as SPL."
    from miscnn_lite.io import save_nifti
    image, label = np.zeros((8, 8, 8), np.int16), np.zeros((8, 8, 8), np.uint8)
    image[1, 2, 6], label[1, 2, 6] = 500, 1
    save_nifti(tmp_path / "ct.nii.gz", image, np.eye(4))                # RAS
    save_nifti(tmp_path / "seg.nii.gz", label, np.eye(4))
    case = load_case(tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz", orientation=None)
    assert case.orientation == "RAS"
    for data in (viewer_data(load_case(tmp_path / "ct.nii.gz", orientation=None), label=tmp_path / "seg.nii.gz"),
                 viewer_data(case, prediction=case.label)):
        marked = np.argwhere(data.image == 500).tolist()
        assert marked == np.argwhere(data.label == 1).tolist() == [[6, 5, 6]]    # z from the top, y front, x left
        if data.prediction is not None:
            assert np.argwhere(data.prediction == 1).tolist() == marked


def test_map_files_of_an_in_memory_case_are_read_by_their_own_affines(tmp_path):
    """A RAS case made in memory: a label file stored as RAS and prediction and entropy files stored as SPL
    all land on the image's voxel."""
    from miscnn_lite.io import reorient, save_nifti
    image, label = np.zeros((8, 8, 8), np.int16), np.zeros((8, 8, 8), np.uint8)
    image[1, 2, 6], label[1, 2, 6] = 500, 1
    case = case_from_arrays(image, None, affine=np.eye(4), case_id="ras")
    assert case.image_path is None and case.orientation == "RAS"
    save_nifti(tmp_path / "seg_ras.nii.gz", label, np.eye(4))
    spl, spl_affine = reorient(label, np.eye(4), "SPL")
    save_nifti(tmp_path / "pred_spl.nii.gz", spl, spl_affine)
    entropy = (label * 0.5).astype(np.float32)
    save_nifti(tmp_path / "entropy_spl.nii.gz", reorient(entropy, np.eye(4), "SPL")[0], spl_affine)
    data = viewer_data(case, label=tmp_path / "seg_ras.nii.gz", prediction=tmp_path / "pred_spl.nii.gz",
                       uncertainty=tmp_path / "entropy_spl.nii.gz")
    marked = np.argwhere(data.image == 500).tolist()
    assert marked == [[6, 5, 6]]
    assert np.argwhere(data.label == 1).tolist() == np.argwhere(data.prediction == 1).tolist() == marked
    assert np.argwhere(data.uncertainty == 0.5).tolist() == marked


def test_probabilities_are_argmaxed_with_a_warning():
    case = blob_case()
    probs = np.stack([case.label == k for k in range(3)], -1).astype(np.float32) * 0.8 + 0.05
    with pytest.warns(UserWarning, match="argmax"):
        v = SliceViewer(case, prediction=probs)
    np.testing.assert_array_equal(v.data.prediction, case.label)


def test_constant_image_has_no_division_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = SliceViewer(np.full((3, 8, 8), -5.0))
        png_array(v.to_png())
        assert v.window[1] > 0
        overlay_figure(np.full((3, 8, 8), -5.0))


# ---- static pictures and fallback -----------------------------------------------------------------
def test_repr_mimebundle_has_widget_and_static_png():
    case = blob_case()
    v = SliceViewer(case)
    bundle = v._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == v.widget.model_id
    static = png_array(base64.b64decode(bundle["image/png"]))
    np.testing.assert_array_equal(static, v.orthogonal_views())
    assert static.shape[1] > png_array(v.image_widget.value).shape[1]     # three planes


def test_static_html_export_without_kernel_shows_the_picture(tmp_path):
    "Execute tests/browser/viewer.ipynb, export to HTML without widget state: the PNG fallback is shown."
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    nb = nbformat.read(ROOT / "tests" / "browser" / "viewer.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   store_widget_state=False).execute()
    outputs = nb.cells[-1].outputs
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    data = outputs[0]["data"]
    assert {"application/vnd.jupyter.widget-view+json", "image/png"} <= set(data)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert f'src="data:image/png;base64,{data["image/png"].strip()[:60]}' in html.replace("\n", "")
    # with the widget state saved, the exporter renders the live widget instead
    assert "widget-state+json" not in html


def test_gif_frames_have_the_overlay(tmp_path):
    case = blob_case()
    path = save_gif(tmp_path / "out.gif", case, prediction=np.roll(case.label, 1, axis=2), step=3, size=64)
    with Image.open(path) as gif:
        assert gif.n_frames == 4                                  # slices 0, 3, 6, 9
        gif.seek(2)
        frame = np.asarray(gif.convert("RGB")).astype(int)
    data = viewer_data(case, prediction=np.roll(case.label, 1, axis=2))
    level, width = WINDOW_PRESETS["abdomen"]
    expected = render_view(data, 0, 6, level, width, "errors", 0.4, None, 64).astype(int)
    assert np.abs(frame - expected).mean() < 3
    cat = error_categories(case.label[6], data.prediction[6])
    assert (cat == 2).any() and (cat == 3).any()


def test_mosaic_on_2d_image_and_sagittal():
    fig = mosaic(np.arange(100.0).reshape(10, 10), n=4)
    assert sum(bool(ax.images) for ax in fig.axes) == 1           # a 2D image has one slice
    fig = mosaic(blob_case(), n=4, axis=2)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["sagittal 4", "sagittal 6", "sagittal 9", "sagittal 11"]


# ---- results browser and patch explorer ------------------------------------------------------------
def write_results(tmp_path, n_cases=4, folds=2):
    data_dir, results = tmp_path / "data", tmp_path / "results"
    rows = []
    for k in range(n_cases):
        case = blob_case(case_id=f"case_{k:05d}", orientation="SPL" if k % 2 else "IPR")
        image_path = save_case(case, data_dir)
        loaded = load_case(image_path, image_path.parent / "segmentation.nii.gz")
        fold = k % folds
        pred = np.roll(loaded.label, k, axis=1)
        save_prediction(pred, loaded, results / f"fold_{fold}" / "predictions" / f"{case.id}.nii.gz")
        for name, cls in (("kidney", 1), ("tumor", 2)):
            t, p = loaded.label == cls, pred == cls
            rows.append(dict(fold=fold, case=case.id, label=name, metric="DICE",
                             value=2 * (t & p).sum() / (t.sum() + p.sum())))
    pd.DataFrame(rows).to_csv(results / "metrics.csv", index=False)
    return data_dir, results


def test_results_browser_shows_prediction_on_the_case_grid(tmp_path):
    data_dir, results = write_results(tmp_path)
    browser = ResultsBrowser(results, data_dir)
    assert browser.fold_dropdown.options == (0, 1)
    assert browser.case_dropdown.options == ("case_00000", "case_00002")
    browser.case_dropdown.value = "case_00002"                # stored IPR, shown SPL
    truth = browser.viewer.data.label
    np.testing.assert_array_equal(browser.viewer.data.prediction, np.roll(truth, 2, axis=1))
    browser.fold_dropdown.value = 1
    assert browser.viewer.data.name == "case_00001"
    metrics = pd.read_csv(results / "metrics.csv")
    mean = metrics[(metrics.fold == 1) & (metrics.label == "tumor")].value.mean()
    assert f"({mean:.3g})" in browser.table.value
    assert "image/png" in browser._repr_mimebundle_()


def test_results_browser_errors(tmp_path):
    data_dir, results = write_results(tmp_path, n_cases=2)
    (results / "fold_x").mkdir()
    with pytest.raises(ValueError, match="fold_<number>"):
        ResultsBrowser(results, data_dir)
    (results / "fold_x").rmdir()
    other = tmp_path / "other"
    save_case(blob_case(case_id="zzz"), other)
    with pytest.raises(ValueError, match=r"predictions for \['case_00000', 'case_00001'\] have no case"):
        ResultsBrowser(results, other)
    (results / "metrics.csv").unlink()
    browser = ResultsBrowser(results, data_dir)              # metrics are optional
    assert "no metrics.csv" in browser.table.value


def test_patch_explorer_is_seeded_and_regenerates():
    from miscnn_lite.augmentation import GaussianNoise, Mirror
    from miscnn_lite.patching import PatchSampler
    case = blob_case()
    x = (case.image - case.image.mean()) / case.image.std()
    sampler = PatchSampler((4, 8, 8), foreground_fraction=1.0)
    e1 = PatchExplorer(x, case.label, sampler, [Mirror(), GaussianNoise()], n_patches=2, seed=5)
    e2 = PatchExplorer(x, case.label, sampler, [Mirror(), GaussianNoise()], n_patches=2, seed=5)
    assert e1.image_widget.value == e2.image_widget.value
    for a, b in zip(e1.patches, e2.patches):
        for (_, ia, la), (_, ib, lb) in zip(a, b):
            np.testing.assert_array_equal(ia, ib)
            np.testing.assert_array_equal(la, lb)
    assert all(stages[0][2].any() for stages in e1.patches)   # foreground_fraction=1: foreground in every patch
    before = e1.image_widget.value
    e1.count.value = 3
    assert len(e1.patches) == 3 and e1.image_widget.value != before


def test_results_browser_reads_the_validation_modules_tables(tmp_path):
    "cross_validate writes fold_<k>/metrics.csv and a top metrics.csv through write_metrics_csv (no fold column)."
    write_metrics_csv = pytest.importorskip("miscnn_lite.evaluation").write_metrics_csv
    data_dir, results = write_results(tmp_path)
    tidy = pd.read_csv(results / "metrics.csv")
    for fold, part in tidy.groupby("fold"):
        write_metrics_csv(part, results / f"fold_{fold}" / "metrics.csv")
    write_metrics_csv(tidy, results / "metrics.csv")
    browser = ResultsBrowser(results, data_dir)
    assert sorted(browser.metrics.fold.unique()) == [0, 1]
    np.testing.assert_allclose(browser.metrics.sort_values(["fold", "case", "label"]).value,
                               tidy.sort_values(["fold", "case", "label"]).value)
