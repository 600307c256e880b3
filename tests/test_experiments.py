"""The papermill experiments run end to end on tiny phantoms, and bad parameters fail before any work."""
import json

import keras
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from miscnn_lite.experiments import (
    ExperimentFailed,
    experiments_dir,
    load_parameters,
    notebook_parameters,
    run_notebook,
)
from miscnn_lite.io import load_nifti, save_nifti

TINY_CV = dict(n_cases=4, n_folds=2, epochs=1, iterations=2, phantom_shape=[24, 48, 48], patch_shape=[16, 32, 32],
               base_filters=4, depth=2, analysis_mode="3d", batch_size=2, n_test_cases=2)


def test_phantom_data_notebook(tmp_path):
    out = run_notebook(experiments_dir() / "phantom_data.ipynb", tmp_path / "phantom_data.ipynb",
                       dict(out_dir=str(tmp_path), n_cases=2, phantom_shape=[16, 48, 48]))
    assert out.exists()
    table = pd.read_csv(tmp_path / "dataset.csv")
    assert list(table["case"]) == ["case_00000", "case_00001"]
    assert (tmp_path / "figures" / "case_slice.png").stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "preprocessed").glob("*.npz")) == ["case_00000.npz", "case_00001.npz"]
    pre = pd.read_csv(tmp_path / "preprocessed.csv")
    assert pre["mean"].abs().max() < 1.5          # z-scored with dataset statistics


RULE_GRID = dict(tumor_min_volumes=[0, 10, 50], tumor_min_fractions=[0, 0.01, 0.05, 0.2], tumor_largest_only=[False,
                                                                                                              True])


def test_kits19_cv_runs_and_resumes(tmp_path):
    nb = experiments_dir() / "kits19_cv.ipynb"
    run_notebook(nb, tmp_path / "cv.ipynb", dict(out_dir=str(tmp_path), **TINY_CV, **RULE_GRID))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == ["fold", "case", "label", "metric", "value"]
    assert sorted(metrics["fold"].unique()) == [0, 1]
    assert set(metrics["label"]) == {"kidney", "tumor", "kidney+tumor"}
    folds = json.loads((tmp_path / "folds.json").read_text())["folds"]
    val_cases = sorted(c for f in folds for c in f["val"])
    assert sorted(metrics["case"].unique()) == val_cases == [f"case_{i:05d}" for i in range(4)]
    for k, fold in enumerate(folds):
        for case in fold["val"]:
            assert (tmp_path / f"fold_{k}" / "predictions" / f"{case}.nii.gz").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["n_folds"] == 2 and manifest["folds"] == folds
    assert set(manifest["config"]) == set(notebook_parameters(nb)) - {"out_dir"}      # enough to repeat the run
    assert (tmp_path / "figures" / "metrics_boxplot.png").exists()
    test_metrics = pd.read_csv(tmp_path / "test_metrics.csv")          # fold ensemble on 2 new phantoms
    assert sorted(test_metrics["case"].unique()) == ["case_00000", "case_00001"]
    assert len(list((tmp_path / "test_predictions").glob("*.nii.gz"))) == 2
    # the tumor rule: each fold's rule is chosen on the other fold, and its predictions are the saved
    # ones with all tumor components but the largest (if chosen) and those below the volume or below the
    # fraction of the predicted kidney+tumor volume turned into kidney
    chosen = json.loads((tmp_path / "result.json").read_text())["tumor_rule"]
    assert set(chosen) == {"0", "1", "all"}
    from miscnn_lite.evaluation import keep_largest_components, remove_small_components
    from miscnn_lite.io import load_prediction, open_dataset
    from miscnn_lite.validation import Fold, tune_postprocessing

    def apply(m, case, rule):
        m = keep_largest_components(m, labels=[2], replace_with=1) if rule["largest_only"] else m
        m = remove_small_components(m, rule["min_volume_mm3"], case.spacing, [2], replace_with=1)
        return remove_small_components(m, labels=[2], replace_with=1,
                                       min_fraction=rule["min_fraction"])   # of all foreground = kidney+tumor
    rules = [{"largest_only": b, "min_volume_mm3": float(v), "min_fraction": float(f)}
             for b in RULE_GRID["tumor_largest_only"] for v in RULE_GRID["tumor_min_volumes"]
             for f in RULE_GRID["tumor_min_fractions"]]
    reader = open_dataset(tmp_path / "phantoms")
    fold_list = [Fold(**f) for f in folds]
    _, again = tune_postprocessing(tmp_path, reader, fold_list, {i: lambda m, c, r=r: apply(m, c, r) for i,
                                                                 r in enumerate(rules)}, 2)
    assert {str(k): rules[i] for k, i in again.items()} == chosen
    for k, fold in enumerate(folds):
        for cid in fold["val"]:
            case = reader.load_case(cid)
            raw = load_prediction(tmp_path / f"fold_{k}" / "predictions" / f"{cid}.nii.gz", case)
            post = load_prediction(tmp_path / f"fold_{k}" / "predictions_postprocessed" / f"{cid}.nii.gz", case)
            assert (post == apply(raw, case, chosen[str(k)])).all()
    post_metrics = pd.read_csv(tmp_path / "metrics_postprocessed.csv")
    assert sorted(post_metrics["case"].unique()) == val_cases and len(post_metrics) == len(metrics)
    # a second run reuses the folds and skips finished folds: identical metrics
    before = (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns
    first = json.loads((tmp_path / "result.json").read_text())
    logs = [pd.read_csv(tmp_path / f"fold_{k}" / "model" / "training_log.tsv", sep="\t") for k in range(2)]
    assert first["training_minutes"] == round(sum(log["time_s"].sum() for log in logs) / 60, 1)
    run_notebook(nb, tmp_path / "cv2.ipynb", dict(out_dir=str(tmp_path), **TINY_CV, **RULE_GRID))
    assert (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns == before
    again = json.loads((tmp_path / "manifest.json").read_text())      # the first run's record stays, the rerun is added
    assert manifest["config"]["data_dir"] is None and again["config"] == manifest["config"]  # repeatable: phantoms
    assert again["versions"] == manifest["versions"] and again["machine"] == manifest["machine"]
    assert [set(r) for r in again["resumed"]] == [{"keras_backend", "versions", "python", "platform", "git_commit",
                                                    "machine"}]
    # the rerun trained nothing: its own minutes are its process's, the training minutes those of the folds' epochs
    assert json.loads((tmp_path / "result.json").read_text())["training_minutes"] == first["training_minutes"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "metrics.csv"), metrics)
    # a run with other settings into that folder is refused before it reuses anything
    with pytest.raises(Exception, match="holds the results of a run with other settings \\(epochs: 1 -> 2\\)"):
        run_notebook(nb, tmp_path / "cv3.ipynb", dict(out_dir=str(tmp_path), **{**TINY_CV, "epochs": 2}, **RULE_GRID))
    assert (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns == before
    # so is the same run on edited data (a label map changed in place, same file name and header)
    seg = next((tmp_path / "phantoms").glob("*/segmentation.nii.gz"))
    label, affine = load_nifti(seg)
    save_nifti(seg, np.where(label == 2, 1, label).astype(label.dtype), affine)
    with pytest.raises(Exception, match=f"holds the results of a run on other data: 1 file.s. of .*changed: "
                                        f"{seg.parent.name}/segmentation.nii.gz"):
        run_notebook(nb, tmp_path / "cv4.ipynb", dict(out_dir=str(tmp_path), **TINY_CV, **RULE_GRID))
    assert (tmp_path / "fold_0" / "metrics.csv").stat().st_mtime_ns == before


@pytest.mark.parametrize("mode", ["2d", "2.5d"])
def test_kits19_cv_slice_modes(tmp_path, mode):
    """2D and 2.5D runs train a 2D network on one-slice patches and predict every validation case; the 2.5D run
    with deep supervision (three outputs through slice_model, the fold ensemble predicting from the first), the
    2D run on the KiTS regions (nested region outputs, the region loss); the 2.5D run pastes tumors resized and fainter,
    the 2D run none."""
    params = dict(TINY_CV, n_folds=2, analysis_mode=mode, slab_neighbours=1, batch_size=4, n_test_cases=1,
                  batch_dice=mode == "2d", deep_supervision=mode == "2.5d", region_based=mode == "2d",
                  dice_background=mode == "2d", ce_class_weights=None if mode == "2d" else [1, 1, 3],
                  augmentation="mirror" if mode == "2.5d" else "none", mirror_axes=[2] if mode == "2.5d" else [],
                  copy_paste=0.5 if mode == "2.5d" else 0.0, copy_paste_scale=0.5, copy_paste_contrast=0.3)
    run_notebook(experiments_dir() / "kits19_cv.ipynb", tmp_path / "cv.ipynb", dict(out_dir=str(tmp_path), **params))
    plan = json.loads((tmp_path / "fold_0" / "model" / "plan.json").read_text())
    assert plan["augmentation"] == ("mirror" if mode == "2.5d" else None)
    assert plan["prediction"]["mirror_axes"] == ([2] if mode == "2.5d" else [])
    pasted = plan["copy_paste"]              # 2.5d: resized, fainter pastes; 2d: copy_paste 0 pastes nothing
    assert (pasted and (pasted["p"], pasted["scale"], pasted["contrast"])) == (
        (0.5, [0.5, 1.0], [0.3, 1.0]) if mode == "2.5d" else None)
    config = json.loads((tmp_path / "fold_0" / "model" / "config.json").read_text())
    assert config["patch_shape"] == [1, 32, 32]
    assert config["loss"]["class_name"] == ("RegionDiceCELoss" if mode == "2d" else "DiceCELoss")
    assert config["loss"]["config"]["batch_dice"] == (mode == "2d")
    assert config["loss"]["config"].get("regions") == ([[1, 2], [2]] if mode == "2d" else None)
    assert config["loss"]["config"].get("include_background", True) == (mode == "2d")   # 2.5d: Dice of kidney, tumor
    assert config["loss"]["config"].get("class_weights") == (None if mode == "2d" else [1.0, 1.0, 3.0])
    assert config["sampler"]["slab_neighbours"] == (1 if mode == "2.5d" else 0)
    from miscnn_lite.training import Segmenter
    seg = Segmenter.load(tmp_path / "fold_0" / "model")
    assert tuple(seg.model.inputs[0].shape) == (None, 1, None, None, 3 if mode == "2.5d" else 1)
    assert len(seg.model.outputs) == (2 if mode == "2.5d" else 1)          # depth 2: the output and one coarser level
    network = next(l for l in seg.model.layers if isinstance(l, keras.Model))              # inside slice_model
    heads = [type(l).__name__ for l in network.layers if l.name == "output"]
    assert heads == (["NestedRegions"] if mode == "2d" else ["Activation"])
    log = pd.read_csv(tmp_path / "fold_0" / "model" / "training_log.tsv", sep="\t")
    assert ("aux_1_loss" in log.columns) == (mode == "2.5d")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert sorted(metrics["case"].unique()) == [f"case_{i:05d}" for i in range(4)]
    assert metrics["value"].notna().all()
    assert len(list((tmp_path / "test_predictions").glob("*.nii.gz"))) == 1


def test_kits19_cv_single_split_skips_tumor_rule_and_scores_the_real_ct(tmp_path):
    """A percentage split has one fold: no other folds to choose a threshold on, so the raw scores stand.
    With real_ct_test the fold model also segments the real example CT (non-contrast phantoms reaching into the
    pelvis here, with their context classes: trained as classes 3-7, folded into background in every prediction)."""
    params = dict(TINY_CV, fold_scheme="split", n_test_cases=0, real_ct_test=True, contrast_phase="non_contrast",
                  phantom_fov_z=[-1.5, 1.0], phantom_shape=[30, 48, 48], phantom_context=True,
                  phantom_perirenal_bowel=2, grow_steps=1, kidney_opening=1)
    run_notebook(experiments_dir() / "kits19_cv.ipynb", tmp_path / "cv.ipynb", dict(out_dir=str(tmp_path), **params))
    assert len(json.loads((tmp_path / "folds.json").read_text())["folds"]) == 1
    phantoms = json.loads((tmp_path / "phantoms" / "phantoms.json").read_text())
    assert phantoms["fov_z"] == [-1.5, 1.0] and phantoms["context"] is True and phantoms["perirenal_bowel"] == 2
    config = json.loads((tmp_path / "manifest.json").read_text())["config"]
    assert (config["grow_steps"], config["kidney_opening"]) == (1, 1)
    config = json.loads((tmp_path / "fold_0" / "model" / "config.json").read_text())
    assert config["class_names"] == ["background", "kidney", "tumor", "liver", "spleen", "muscle", "bowel", "bladder"]
    assert config["sampler"]["foreground_classes"] == [1, 2]          # patches still centred on kidney and tumor
    from miscnn_lite.io import open_dataset
    from miscnn_lite.training import Segmenter
    assert Segmenter.load(tmp_path / "fold_0" / "model").model.outputs[0].shape[-1] == 8
    assert set(np.unique(open_dataset(tmp_path / "phantoms").load_case("case_00000").label)) >= {0, 1, 3, 5, 6}
    saved = [*(tmp_path / "fold_0" / "predictions").glob("*.nii.gz"), *(tmp_path / "real_ct_predictions").glob("*")]
    for path in saved:
        assert np.asanyarray(nib.load(path).dataobj).max() <= 2, path   # the context classes became background
    assert not (tmp_path / "metrics_postprocessed.csv").exists()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["tumor_rule"] == {"all": {"largest_only": False, "min_volume_mm3": 0.0, "min_fraction": 0.0}}
    real = result["real_ct"]
    assert 0 <= real["DICE"] <= 1 and real["HDRFDST95"] > 0
    table = pd.read_csv(tmp_path / "real_ct_metrics.csv")
    assert np.isclose(table[table.metric == "DICE"].value.iloc[0], real["DICE"], atol=1e-4)
    prediction = nib.load(tmp_path / "real_ct_predictions" / "example_ct.nii.gz")
    assert prediction.shape == (122, 101, 112)                       # the real scan's own grid and orientation
    kidney_hu = real["kidney_hu_p10_p50_p90"]
    assert 0 < kidney_hu["real_ct"][1] < 40 and 0 < kidney_hu["training_cases"][1] < 60   # both non-contrast


def test_bad_parameters_fail_before_work(tmp_path):
    nb = experiments_dir() / "kits19_cv.ipynb"
    with pytest.raises(ValueError, match="Did you mean 'epochs'"):
        run_notebook(nb, tmp_path / "x.ipynb", {"epoch": 3, "out_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="expected int"):
        run_notebook(nb, tmp_path / "x.ipynb", {"epochs": "many"})
    assert not any(tmp_path.iterdir())            # nothing was written


def test_failing_run_keeps_executed_notebook(tmp_path):
    nb = experiments_dir() / "kits19_cv.ipynb"
    with pytest.raises(ExperimentFailed, match="analysis_mode"):
        run_notebook(nb, tmp_path / "cv.ipynb", dict(out_dir=str(tmp_path), analysis_mode="4d", n_cases=2))
    assert (tmp_path / "cv.failed.ipynb").exists() and not (tmp_path / "cv.ipynb").exists()
    early = r"cell 3 failed with \w+: "   # the first cell after the parameters: checked before TensorFlow's import
    for bad, words in [(dict(epochs=0), r"epochs=0: give a whole number >= 1\. "),
                       (dict(n_folds=1), r"n_folds=1: give a whole number >= 2\. "),
                       (dict(batch_size=0), r"batch_size=0: give a whole number >= 1\. "),
                       (dict(kidney_opening=-1), r"opening \(kidney_opening\)=-1"),
                       (dict(postprocess="all"), r"mode \(postprocess\)=.all.: choose one of"),
                       (dict(copy_paste=1.5), "copy_paste"), (dict(copy_paste_scale=0), "copy_paste_scale")]:
        with pytest.raises(ExperimentFailed, match=early + words):        # refused before any results are written
            run_notebook(nb, tmp_path / "b" / "b.ipynb", dict(out_dir=str(tmp_path / "b" / "r"), n_cases=2, **bad))
        assert not (tmp_path / "b" / "r").exists()
    for bad, words in [(dict(overlap=1.5), "overlap"), (dict(patch_shape=[1, 50, 50]), "patch")]:   # the plan's
        with pytest.raises(ExperimentFailed, match="cell 5 failed with .*" + words):     # checks, after the import
            run_notebook(nb, tmp_path / "b" / "b.ipynb", dict(out_dir=str(tmp_path / "b" / "r"), n_cases=2, **bad))
        assert not (tmp_path / "b" / "r").exists()
    from miscnn_lite.io import save_case
    from miscnn_lite.phantoms import toy_case
    for k in range(3):
        case = toy_case(k, shape=(16, 48, 48))
        case.label = case.label if k != 1 else None
        save_case(case, tmp_path / "data")
    with pytest.raises(ExperimentFailed, match=r"1 case\(s\) without a segmentation \(toy_001\)"):
        run_notebook(nb, tmp_path / "u.ipynb", dict(out_dir=str(tmp_path / "u"), data_dir=str(tmp_path / "data"),
                                                    fold_scheme="kfold", n_folds=2))
    assert not (tmp_path / "u" / "folds.json").exists()
    with pytest.raises(ValueError, match="'phantom_spacing' = 2 is a int, expected list"):       # before a kernel
        run_notebook(nb, tmp_path / "s.ipynb", dict(out_dir=str(tmp_path / "s"), phantom_spacing=2, n_cases=2))
    small = dict(n_cases=2, n_folds=2, phantom_shape=[16, 48, 48])
    phantom = r"n_cases / phantom_\* parameters: "
    for bad, words in [(dict(phantom_spacing=[2, 1]), phantom + r"spacing \(2.0, 1.0\) has 2 values"),
                       (dict(phantom_perirenal_bowel=9), phantom + "perirenal_bowel 9: expected a whole number"),
                       (dict(tumor_min_fractions=[0, 2]), r"tumor_min_fractions=\[0, 2\]: give fractions in \[0, 1\]"),
                       (dict(dice_background=False, region_based=True),
                        "dice_background=False leaves background out of dice_ce's Dice mean; loss='dice_ce' with "
                        "region_based=True"),
                       (dict(ce_class_weights=[1, 3]), r"ce_class_weights=\[1, 3\]: give 3 numbers >= 0"),
                       (dict(grow_steps=-1), "grow_steps=-1: give an int >= 0"),
                       (dict(augmentation="heavy"), "augmentation='heavy': choose none, ct"),
                       (dict(mirror_axes=[2, 2]), r"mirror_axes=\[2, 2\]: give distinct axes"),
                       (dict(phantom_context=True, region_based=True), "region_based=True trains only the kidney"),
                       (dict(fold_key="tumour_volume"), "fold_key='tumour_volume': choose"),
                       (dict(window="Clip"), "window='Clip': choose 'clip'"),
                       (dict(intensity_normalization="z-score"), "intensity_normalization='z-score': choose"),
                       (dict(clip_hu=[1, 2, 3]), r"clip_hu=\[1, 2, 3\]: give \[low, high\]"),
                       (dict(n_test_cases=-3), "n_test_cases=-3: give a whole number >= 0"),
                       (dict(data_dir=str(tmp_path / "data"), test_data_dir=str(tmp_path / "data")),
                        "test_data_dir=.* is the training data")]:
        with pytest.raises(ExperimentFailed, match=early + words):
            run_notebook(nb, tmp_path / "c.ipynb", dict(out_dir=str(tmp_path / "c"), **small, **bad))
        assert not (tmp_path / "c").exists()
    import papermill as pm  # papermill alone checks no types (run_notebook refuses these before a kernel)
    for bad, words in [(dict(region_based="false", dice_background=False), "region_based='false': give true or false"),
                       (dict(phantom_fov_z=1), r"phantom_fov_z=1: give a list e.g. with papermill -y")]:
        with pytest.raises(pm.PapermillExecutionError, match=words):
            pm.execute_notebook(str(nb), str(tmp_path / "pm.ipynb"), parameters=dict(out_dir=str(tmp_path / "c"),
                                **small, **bad), cwd=str(nb.parent), progress_bar=False)
        assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("preset", sorted((experiments_dir() / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_are_valid_parameters(preset):
    from miscnn_lite.experiments import check_parameters
    check_parameters(experiments_dir() / "kits19_cv.ipynb", load_parameters(preset))


def test_compare_models_on_identical_folds(tmp_path):
    "Two configurations on the same phantoms and folds: one comparison table with paired tests, one figure per label."
    tiny = {k: v for k, v in TINY_CV.items() if k not in ("n_cases", "n_folds", "phantom_shape")}
    params = dict(out_dir=str(tmp_path), n_cases=4, n_folds=2, phantom_shape=[24, 48, 48], base=tiny,
                  configs={"unet": {}, "unet_2d": {"analysis_mode": "2d", "batch_size": 4}}, baseline="unet")
    run_notebook(experiments_dir() / "compare_models.ipynb", tmp_path / "compare.ipynb", params)
    folds = json.loads((tmp_path / "folds.json").read_text())["folds"]
    for name in ("unet", "unet_2d"):
        assert json.loads((tmp_path / name / "folds.json").read_text())["folds"] == folds
        assert json.loads((tmp_path / name / "manifest.json").read_text())["folds"] == folds
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert set(table["config"]) == {"unet", "unet_2d"} and set(table["label"]) == {"kidney", "tumor", "kidney+tumor"}
    assert (table["n_cases"] == 4).all()
    assert table.loc[table["config"] == "unet",
                     "p_value"].isna().all()       # the baseline is not tested against itself
    a, b = (pd.read_csv(tmp_path / name / "metrics_postprocessed.csv") for name in ("unet", "unet_2d"))
    kidney = lambda t: t[(t.metric == "DICE") & (t.label == "kidney")].set_index("case")["value"]
    row = table[(table.config == "unet_2d") & (table.label == "kidney")].iloc[0]
    assert abs(row["mean_difference"] - (kidney(b) - kidney(a)).mean()) < 1e-9
    assert (tmp_path / "figures" / "comparison_kidney.png").stat().st_size > 1000


def test_compare_models_rejects_shared_parameters(tmp_path):
    with pytest.raises(ExperimentFailed, match="sets those for every run"):
        run_notebook(experiments_dir() / "compare_models.ipynb", tmp_path / "c.ipynb",
                     dict(out_dir=str(tmp_path), configs={"a": {"n_folds": 5}}, baseline="a"))


@pytest.mark.parametrize("name", ["kits19_cv.ipynb", "compare_models.ipynb", "phantom_data.ipynb"])
def test_every_parameter_line_is_read_by_papermill(name):
    "papermill silently drops a parameter whose comment it cannot parse (an '=' or a quote in it)."
    import ast
    nb = json.loads((experiments_dir() / name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    body = ast.parse("".join(cell["source"])).body
    assigned = [t.id if isinstance(node, ast.Assign) else node.target.id for node in body
                if isinstance(node, (ast.Assign, ast.AnnAssign)) for t in getattr(node, "targets", [None])]
    assert list(notebook_parameters(experiments_dir() / name)) == assigned


def test_kernel_start_warning_stays_out_of_the_output(tmp_path):
    "ipykernel 7 warns at each start that its sockets are unencrypted, at shutdown may log an interrupt: neither shows."
    import subprocess
    import sys

    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('x is', x)")]
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    code = ("import sys; from miscnn_lite.experiments import run_notebook; "
            "run_notebook(sys.argv[1], sys.argv[2], {'x': 3})")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tiny.ipynb"), str(tmp_path / "out.ipynb")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "IPKernelApp" not in done.stderr and "without encryption" not in done.stderr
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs
    assert [o.get("text") for o in outputs] == ["x is 3\n"]


def _own_notebook(path, parameters: str, body: str):
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


def test_own_notebooks_get_clear_errors_and_a_success_clears_an_earlier_failure(tmp_path):
    from miscnn_lite.experiments import run_default_experiment
    from miscnn_lite.io import MiscnnError
    without = _own_notebook(tmp_path / "mine.ipynb", "epochs = 1", "print(epochs)")
    with pytest.raises(MiscnnError, match=r"mine.ipynb: declares no out_dir parameter; .* add `out_dir = \"results\"`"):
        run_default_experiment(tmp_path / "r", notebook=str(without), progress=False)
    flaky = _own_notebook(tmp_path / "flaky.ipynb", "out_dir = 'results'\nfail = False",
                          "assert not fail, 'asked to fail'")
    with pytest.raises(ExperimentFailed, match="asked to fail"):
        run_notebook(flaky, tmp_path / "out" / "run.ipynb", {"out_dir": str(tmp_path / "out"), "fail": True})
    assert (tmp_path / "out" / "run.failed.ipynb").exists()
    run_notebook(flaky, tmp_path / "out" / "run.ipynb", {"out_dir": str(tmp_path / "out")})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.ipynb"]     # the old failure is not kept


def test_results_inside_the_data_or_testing_on_the_training_data_are_refused(tmp_path):
    from miscnn_lite.experiments import check_parameters, experiment_parameters
    from miscnn_lite.io import SettingsError
    (tmp_path / "data").mkdir()
    with pytest.raises(SettingsError, match="holds the results folder --out .*Give an --out outside the dataset"):
        experiment_parameters(tmp_path / "data" / "results", data=tmp_path / "data")
    with pytest.raises(SettingsError, match="test_data_dir .* is the training data"):
        experiment_parameters(tmp_path / "r", data=tmp_path / "data",
                              parameters={"test_data_dir": str(tmp_path / "data")})
    assert not (tmp_path / "r").exists()
    check_parameters(experiments_dir() / "kits19_cv.ipynb", {"phantom_shape": None})   # "None: the same", as it says
