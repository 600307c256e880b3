"""The `miscnn-lite` console script, run as a user would: in a subprocess, from the installed entry point."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miscnn_lite.io import case_from_arrays, save_case

EXE = shutil.which("miscnn-lite", path=str(Path(sys.executable).parent))


def run(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_console_script_installed():
    assert EXE is not None, "miscnn-lite is not on the venv's PATH: pip install -e . registers it"
    r = run("--help")
    assert r.returncode == 0 and "phantoms" in r.stdout and "info" in r.stdout


def test_info_file_and_dataset(tmp_path):
    label = np.zeros((5, 10, 12), np.uint8)
    label[1:3, 2:6, 2:6] = 2
    image = np.full((5, 10, 12), -100, np.int16)
    image[0, 0, 0] = 300
    save_case(case_from_arrays(image, label, spacing=(3.0, 0.75, 0.5), case_id="case_00007"), tmp_path)
    r = run("info", tmp_path / "case_00007" / "imaging.nii.gz")
    assert r.returncode == 0, r.stderr
    assert "shape: (5, 10, 12)" in r.stdout and "spacing_mm: (3.0, 0.75, 0.5)" in r.stdout
    assert "min: -100.0" in r.stdout and "max: 300.0" in r.stdout
    r = run("info", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "case_00007" in r.stdout and "[0, 2]" in r.stdout
    (tmp_path / "flat").mkdir()                          # a folder of volumes, e.g. predictions
    shutil.copy(tmp_path / "case_00007" / "segmentation.nii.gz", tmp_path / "flat" / "case_00007.nii.gz")
    r = run("info", tmp_path / "flat")
    assert r.returncode == 0 and "case_00007.nii.gz" in r.stdout and "[0, 2]" in r.stdout, r.stderr
    (tmp_path / "case_00007" / "imaging.nii.gz.bak").write_text("x")  # a warning: one line, no source code
    r = run("info", tmp_path)
    assert r.returncode == 0 and "miscnn-lite info: warning: " in r.stderr and "UserWarning" not in r.stderr, r.stderr


def test_info_errors_are_one_line(tmp_path):
    r = run("info", tmp_path / "nothing")
    assert r.returncode == 2 and "no such file or folder; give an image file or a dataset folder" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("info", tmp_path / "empty")
    assert r.returncode == 2 and "empty folder" in r.stderr


def test_phantoms_command(tmp_path):
    pytest.importorskip("miscnn_lite.phantoms")
    r = run("phantoms", "--out", tmp_path / "ph", "--cases", 2, "--seed", 3, "--shape", 24, 48, 48, "--quiet")
    assert r.returncode == 0, r.stderr
    cases = sorted(p.name for p in (tmp_path / "ph").iterdir() if p.is_dir())
    assert cases == ["case_00000", "case_00001"]
    r = run("info", tmp_path / "ph")
    assert r.returncode == 0 and "case_00001" in r.stdout
    before = (tmp_path / "ph" / "case_00000" / "imaging.nii.gz").read_bytes()
    other = ("phantoms", "--out", tmp_path / "ph", "--cases", 2, "--seed", 4, "--shape", 24, 48, 48, "--quiet")
    r = run(*other)
    assert r.returncode == 2 and "phantoms --overwrite" in r.stderr, r.stderr
    assert (tmp_path / "ph" / "case_00000" / "imaging.nii.gz").read_bytes() == before
    assert run(*other, "--overwrite").returncode == 0
    assert (tmp_path / "ph" / "case_00000" / "imaging.nii.gz").read_bytes() != before


def two_small_cases(folder):
    "Two 6×16×16 cases with a kidney block, written in KiTS19 layout into `folder`."
    for i in range(2):
        label = np.zeros((6, 16, 16), np.uint8)
        label[2:4, 4:10, 4:10] = 1
        image = (np.arange(6 * 16 * 16).reshape(6, 16, 16) % 500 - 200).astype(np.int16)
        save_case(case_from_arrays(image, label, spacing=(2.0, 0.8, 0.8), case_id=f"case_{i:05d}"), folder)


def test_preprocess_command(tmp_path):
    two_small_cases(tmp_path / "data")
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "z", "--quiet")
    assert r.returncode == 0, r.stderr
    images = []
    for i in range(2):
        with np.load(tmp_path / "z" / f"case_0000{i}.npz") as z:
            images.append(z["image"])
    both = np.stack(images)        # clipped to -79..304 HU, z-scored with statistics over both cases
    assert abs(both.mean()) < 1e-3 and abs(both.std() - 1) < 1e-3 and both.min() > -2
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "pre", "--spacing", 4.0, 0.8, 0.8, "--quiet")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "pre" / "case_00001.npz") as z:
        assert z["image"].shape == (3, 16, 16) and z["label"].shape == (3, 16, 16)
    import json
    steps = json.loads((tmp_path / "pre" / "pipeline.json").read_text())["steps"]
    assert [s["step"] for s in steps] == ["ClipHU", "ZScore", "Resample"]
    r = run("preprocess", "--data", tmp_path / "nothing", "--out", tmp_path / "x")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "y", "--clip", -100, 200,
            "--percentile", 0.1, 0.9)
    assert r.returncode == 2 and "--clip and --percentile: give one way to preprocess" in r.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "case_00009.npz").write_bytes(b"not ours")       # a user's file where the cases would go
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "mine", "--quiet", "--overwrite")
    assert r.returncode == 2 and "holds files an earlier preprocess did not write (case_00009.npz)" in r.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["case_00009.npz"]


def test_course_writes_keeps_edits_and_overwrites_with_force(tmp_path):
    from miscnn_lite.experiments import bundled
    shipped = bundled("tutorials")
    r = run("course", tmp_path / "course")
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / "course").glob("*.ipynb"))
    assert written == sorted(p.name for p in shipped.glob("*.ipynb")) and len(written) == 11
    assert not (tmp_path / "course" / "solutions").exists()
    edited = tmp_path / "course" / "04_patches.ipynb"
    edited.write_text("a student's answers")
    r = run("course", tmp_path / "course", "--solutions")
    assert r.returncode == 2 and "04_patches.ipynb" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr
    assert edited.read_text() == "a student's answers" and not (tmp_path / "course" / "solutions").exists()
    r = run("course", tmp_path / "course", "--solutions", "--force")
    assert r.returncode == 0, r.stderr
    assert edited.read_bytes() == (shipped / "04_patches.ipynb").read_bytes()
    written = tmp_path / "course" / "solutions" / "04_patches.ipynb"
    assert written.read_bytes() == (shipped / "solutions" / "04_patches.ipynb").read_bytes()


def test_course_into_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    r = run("course", tmp_path / "notes.txt")
    assert r.returncode == 2 and "notes.txt: is a file" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "not a folder"


def test_unknown_experiment_and_preset_list_the_shipped_ones(tmp_path):
    r = run("experiment", "--out", tmp_path, "--notebook", "kits19")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Available experiments: compare_models.ipynb, kits19_cv.ipynb, phantom_data.ipynb" in r.stderr
    r = run("cv", "--out", tmp_path, "-f", "paper")
    assert r.returncode == 2 and "miscnn_paper.yaml" in r.stderr and "ct_cues.yaml" in r.stderr
    assert list(tmp_path.iterdir()) == []                       # nothing ran


def test_download_help_from_the_shipped_script():
    r = run("download", "kits19", "--help")
    assert r.returncode == 0 and "usage: miscnn-lite download kits19" in r.stdout and "--cases" in r.stdout


def test_predict_ensemble_with_uncertainty_maps_for_the_viewer(tmp_path, capsys):
    "Two --model folders with --uncertainty: prediction, entropy and variance per case, readable by SliceViewer."
    pytest.importorskip("keras")
    from miscnn_lite.cli import main
    from miscnn_lite.io import load_case, load_prediction
    from miscnn_lite.models import unet
    from miscnn_lite.phantoms import toy_case
    from miscnn_lite.training import Segmenter
    from miscnn_lite.visualization import SliceViewer
    models = []
    for k in range(2):
        Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2, seed=k).save(
            tmp_path / f"model_{k}")
        models += ["--model", str(tmp_path / f"model_{k}")]
    case = toy_case(7, shape=(16, 24, 24))
    save_case(case, tmp_path / "data")
    out = tmp_path / "pred"
    assert main(["predict", *models, "--input", str(tmp_path / "data"), "--out", str(out), "--uncertainty"]) == 0
    folder = out / case.id
    assert sorted(p.name for p in folder.iterdir()) == ["prediction.nii.gz", "prediction_entropy.nii.gz",
                                                         "prediction_variance.nii.gz"]
    image = load_case(tmp_path / "data" / case.id / "imaging.nii.gz")
    entropy = load_prediction(folder / "prediction_entropy.nii.gz", image)
    assert entropy.dtype == np.float32 and 0 < entropy.max() <= np.log(3) + 1e-6
    viewer = SliceViewer(tmp_path / "data" / case.id, prediction=folder / "prediction.nii.gz",
                         uncertainty=folder / "prediction_variance.nii.gz")
    np.testing.assert_allclose(viewer.data.uncertainty, load_prediction(folder / "prediction_variance.nii.gz", image))
    assert "uncertainty" in viewer.views
    viewer.close()
    code = main(["predict", *models[:2], "--input", str(tmp_path / "data"), "--out", str(tmp_path / "p2"),
                 "--mirror-axes", "3"])
    assert code == 2 and "mirror_axes" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists()


def test_predict_reads_no_labels_refuses_name_clashes_and_names_what_it_wrote(tmp_path, capsys):
    "A damaged segmentation does not stop predict; a.nii beside a.nii.gz is refused before anything is written;"
    " damaged and NaN images are named and skipped, the other cases predicted, and the exit status says so."
    pytest.importorskip("keras")
    from miscnn_lite.cli import main
    from miscnn_lite.io import load_nifti
    from miscnn_lite.models import unet
    from miscnn_lite.phantoms import toy_case
    from miscnn_lite.training import Segmenter
    Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2).save(tmp_path / "model")
    for k in (0, 1, 2):
        save_case(toy_case(k, shape=(16, 24, 24)), tmp_path / "data")
    cases = sorted((tmp_path / "data").iterdir())
    (cases[0] / "segmentation.nii.gz").write_bytes(b"damaged")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "data"),
                 "--out", str(tmp_path / "p1")]) == 0
    assert sorted(p.name for p in (tmp_path / "p1").iterdir()) == [c.name for c in cases]
    (cases[0] / "imaging.nii.gz").write_bytes(b"damaged")              # the first case unreadable
    nan = toy_case(1, shape=(16, 24, 24))
    image = nan.image.astype(np.float32)
    image[3, 4, 5] = np.nan                                            # the second holds a NaN voxel
    save_case(dataclasses.replace(nan, image=image), tmp_path / "data")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "data"),
                 "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 input(s) not predicted" in err, err
    assert str(cases[0] / "imaging.nii.gz") in err and f"{cases[1] / 'imaging.nii.gz'}: image has 1 NaN" in err, err
    assert f"other prediction(s) are written in {tmp_path / 'p2'}: {cases[2].name}/prediction.nii.gz" in err, err
    assert sorted(p.name for p in (tmp_path / "p2").iterdir()) == [cases[2].name]      # after the two bad ones
    np.testing.assert_array_equal(load_nifti(tmp_path / "p2" / cases[2].name / "prediction.nii.gz")[0],
                                  load_nifti(tmp_path / "p1" / cases[2].name / "prediction.nii.gz")[0])
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(cases[2] / "imaging.nii.gz", files / "a.nii.gz")
    import nibabel as nib
    nib.save(nib.load(files / "a.nii.gz"), files / "a.nii")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(files),
                 "--out", str(tmp_path / "p3")]) == 2
    err = capsys.readouterr().err
    assert "would both be predicted into" in err and "a.nii" in err, err
    assert not (tmp_path / "p3").exists()


def test_pictures_train_predict_evaluate(tmp_path, capsys):
    "A folder of 2D pictures with RGB colour masks: phantoms --pictures, train, predict (PNG), evaluate, bad input."
    from PIL import Image

    from miscnn_lite.io import read_mask
    data, model, pred = tmp_path / "pics", tmp_path / "model", tmp_path / "pred"
    r = run("phantoms", "--pictures", "--out", data, "--cases", 4, "--shape", 8, 48, 48)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in data.iterdir()) == ["dataset.json", "images", "masks"]
    r = run("info", data)
    assert r.returncode == 0 and "(1, 48, 48)" in r.stdout and "(1.0, 0.8, 0.8)" in r.stdout, r.stdout + r.stderr
    r = run("train", "--data", data, "--out", model, "--epochs", 1, "--iterations", 2, "--patch-shape", 32, 32,
            "--base-filters", 4, "--depth", 2)
    assert r.returncode == 0, r.stderr
    import json
    settings = json.loads((model / "train_settings.json").read_text())
    assert (settings["ndim"], settings["patch_shape"], settings["hu_window"], settings["n_classes"]) == (2, [1, 32, 32],
                                                                                                         None, 3)
    log = (model / "training_log.tsv").read_text().splitlines()[0].split("\t")     # names from dataset.json "labels"
    assert {"dice_kidney", "dice_tumor", "val_dice_kidney", "val_dice_tumor"} <= set(log), log
    r = run("predict", "--model", model, "--input", data, "--out", pred)
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in pred.iterdir())
    assert written == [f"case_0000{i}.png" for i in range(4)]
    first = pred / "case_00000.png"
    assert Image.open(first).mode == "P" and read_mask(first).shape == (48, 48)
    assert set(np.unique(read_mask(first))) <= {0, 1, 2}
    r = run("evaluate", "--reference", data, "--prediction", pred, "--labels", "1", "--out", tmp_path / "m.csv")
    assert r.returncode == 0, r.stderr
    import pandas as pd
    table = pd.read_csv(tmp_path / "m.csv")
    dice = table[table.metric == "DICE"].set_index("case").value
    assert sorted(dice.index) == [f"case_0000{i}" for i in range(4)]
    ref = read_mask(data / "masks" / "case_00000.png", {0: "#000000", 1: "#dc3c3c", 2: "#f0c800"})
    own = read_mask(first)
    expected = 2 * ((ref == 1) & (own == 1)).sum() / max((ref == 1).sum() + (own == 1).sum(), 1)
    assert abs(dice["case_00000"] - expected) < 1e-9
    save_case(case_from_arrays(np.zeros((8, 48, 48), np.int16), spacing=(2.5, 0.8, 0.8), case_id="ct"), tmp_path / "ct")
    r = run("predict", "--model", model, "--input", tmp_path / "ct", "--out", tmp_path / "pred_ct")
    assert r.returncode == 2 and "trained on 2D pictures, but the input holds volumes" in r.stderr, r.stderr
    # bad input: dataset.json names 2 classes, the run trains 3
    sidecar = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**sidecar, "labels": {"0": "background", "1": "kidney"}}))
    r = run("train", "--data", data, "--out", tmp_path / "model2", "--epochs", 1)
    assert r.returncode != 0 and "names 2 classes (background, kidney) but n_classes=3" in r.stderr, r.stderr
    assert not (tmp_path / "model2").exists()
    (data / "dataset.json").write_text(json.dumps(sidecar))
    # bad input: a colour outside the table names the file and the colour
    rgb = np.array(Image.open(data / "masks" / "case_00001.png").convert("RGB"))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(data / "masks" / "case_00001.png")
    from miscnn_lite.cli import main
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "m2"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "case_00001.png: colour #010203 (1 pixels, first at row 0, column 0)" in err and "Traceback" not in err
    assert not (tmp_path / "m2").exists()                           # no empty model folder left behind


# ---------------------------------------------------------------- a review of the commands as a student uses them
def test_predict_into_the_input_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    pytest.importorskip("keras")
    from miscnn_lite.cli import main
    from miscnn_lite.models import unet
    from miscnn_lite.phantoms import toy_case
    from miscnn_lite.training import Segmenter
    Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2).save(tmp_path / "model")
    save_case(toy_case(0, shape=(16, 24, 24)), tmp_path / "data")
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tmp_path / "data" / "toy_000" / "imaging.nii.gz", flat / "a.nii.gz")
    before = (flat / "a.nii.gz").read_bytes()
    for source, said in ((flat, "is the --input folder: the predictions would be written among the images"),
                         (flat / "a.nii.gz", "is an input file; predicting into it would overwrite it")):
        assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(source), "--out", str(flat)]) == 2
        assert said in capsys.readouterr().err
    assert (flat / "a.nii.gz").read_bytes() == before


def test_picture_phantoms_refuse_other_arguments_unless_overwrite(tmp_path):
    pics = tmp_path / "pics"
    assert run("phantoms", "--out", pics, "--cases", 3, "--pictures").returncode == 0
    assert run("phantoms", "--out", pics, "--cases", 3, "--pictures").returncode == 0      # the same again: fine
    r = run("phantoms", "--out", pics, "--cases", 2, "--pictures", "--seed", 5)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "case_00002.png" in r.stderr    # beyond 2 cases
    r = run("phantoms", "--out", pics, "--cases", 3, "--pictures", "--seed", 5)
    assert r.returncode == 2 and "written with other arguments" in r.stderr
    assert run("phantoms", "--out", pics, "--cases", 2, "--pictures", "--seed", 5, "--overwrite").returncode == 0
    assert sorted(p.name for p in (pics / "images").iterdir()) == ["case_00000.png", "case_00001.png"]
    (pics / "images" / "my_own_photo.png").write_text("precious")                    # a file of the user's
    r = run("phantoms", "--out", pics, "--cases", 2, "--pictures", "--seed", 5)
    assert r.returncode == 2 and "does not list" in r.stderr
    assert (pics / "images" / "my_own_photo.png").read_text() == "precious"
    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "case_00000.png").write_text("precious")
    assert run("phantoms", "--out", mine, "--cases", 1, "--pictures").returncode == 2
    assert (mine / "images" / "case_00000.png").read_text() == "precious"
    r = run("phantoms", "--out", tmp_path / "none", "--cases", 0)
    assert r.returncode == 2 and "--cases" in r.stderr


def test_empty_sweep_and_preset_files_are_refused(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    r = run("sweep", tmp_path / "empty.yaml", "--out", tmp_path / "sw")
    assert r.returncode == 2 and "sets no parameters" in r.stderr
    r = run("experiment", "--out", tmp_path / "ex", "-f", tmp_path / "empty.yaml")
    assert r.returncode == 2 and "sets no parameters" in r.stderr
    assert not (tmp_path / "sw").exists() and not (tmp_path / "ex").exists()
    from miscnn_lite.experiments import expand_grid
    with pytest.raises(Exception, match="sets no parameters"):
        expand_grid({"notebook": "kits19_cv.ipynb"})


def test_experiment_presets_merge_in_order_and_its_folders_are_checked(tmp_path, monkeypatch, capsys):
    "Two -f presets: the later overrides the earlier, -p overrides both; -p out_dir/data_dir, --out equal to --data"
    " and YAML 1.1 surprises (010, a key twice) are refused; a notebook copy left by a killed run is removed."
    from miscnn_lite import experiments
    from miscnn_lite.cli import main
    seen = {}
    monkeypatch.setattr(experiments, "run_default_experiment",
                        lambda out, data=None, parameters=None, notebook=None: seen.update(parameters) or out)
    (tmp_path / "a.yaml").write_text("epochs: 1\nseed: 3\nlearning_rate: 1e-3\n")
    (tmp_path / "b.yaml").write_text("epochs: 2\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".kits19_cv.abc123.tmp.ipynb").write_text("{}")          # left by a killed run
    assert main(["experiment", "--out", str(tmp_path / "out"), "-p", "epoch=3"]) == 2     # refused: removes nothing
    assert "Did you mean 'epochs'" in capsys.readouterr().err and not seen
    assert (tmp_path / "out" / ".kits19_cv.abc123.tmp.ipynb").exists()
    assert main(["experiment", "--out", str(tmp_path / "out"), "-f", str(tmp_path / "a.yaml"),
                 "-f", str(tmp_path / "b.yaml"), "-p", "seed=4"]) == 0
    assert seen == {"epochs": 2, "seed": 4, "learning_rate": 0.001}
    assert not (tmp_path / "out" / ".kits19_cv.abc123.tmp.ipynb").exists()
    for argv, words in [(["-p", "out_dir=elsewhere"], "give the folder as --out elsewhere"),
                        (["-p", "data_dir=d"], "give the folder as --data d"),
                        (["-p", "seed=010"], "a number with a leading zero is ambiguous")]:
        try:
            code = main(["experiment", "--out", str(tmp_path / "out"), *argv])
        except SystemExit as e:                                           # argparse refuses a -p value itself
            code = e.code
        assert code == 2 and words in capsys.readouterr().err
    (tmp_path / "twice.yaml").write_text("epochs: 1\nepochs: 2\n")
    assert main(["experiment", "--out", str(tmp_path / "out"), "-f", str(tmp_path / "twice.yaml")]) == 2
    assert "'epochs' is given twice (line 2)" in capsys.readouterr().err
    monkeypatch.undo()
    save_case(case_from_arrays(np.zeros((4, 8, 8), np.float32), case_id="c0"), tmp_path / "data")
    assert main(["experiment", "--out", str(tmp_path / "data"), "--data", str(tmp_path / "data")]) == 2
    assert "holds the results folder --out" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["c0"]


def test_course_with_a_file_in_the_way_writes_nothing(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "solutions").write_text("hi")
    r = run("course", tmp_path / "c", "--solutions")
    assert r.returncode == 2 and "Nothing was written" in r.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["solutions"]


def test_preprocess_replaces_another_run_only_with_overwrite(tmp_path):
    two_small_cases(tmp_path / "data")
    assert run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "z", "--quiet").returncode == 0
    assert run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "z", "--quiet").returncode == 0
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "z", "--spacing", 4.0, 0.8, 0.8, "--quiet")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    with np.load(tmp_path / "z" / "case_00001.npz") as z:
        assert z["image"].shape == (6, 16, 16)                     # the earlier run is untouched
    r = run("preprocess", "--data", tmp_path / "data", "--out", tmp_path / "z", "--spacing", 4.0, 0.8, 0.8, "--quiet",
            "--overwrite")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "z" / "case_00001.npz") as z:
        assert z["image"].shape == (3, 16, 16)


def test_phantoms_bad_shape_names_the_flag(tmp_path):
    for extra in ((), ("--pictures",)):
        r = run("phantoms", "--out", tmp_path / "ph", "--shape", 4, 64, 64, *extra)
        assert r.returncode != 0 and "--shape 4 64 64: a phantom needs at least 8 32 32 voxels" in r.stderr, r.stderr
        assert "e.g. --shape 48 96 96" in r.stderr and not (tmp_path / "ph").exists()


def test_phantoms_command_spacing_layout_and_phase(tmp_path):
    r = run("phantoms", "--out", tmp_path / "nn", "--cases", 1, "--shape", 8, 32, 32, "--spacing", 3, 3, 3,
            "--layout", "nnunet", "--contrast-phase", "non_contrast", "--quiet")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "nn" / "phantoms.json").read_text())
    assert (manifest["spacing"], manifest["layout"], manifest["contrast_phase"]) == ([3.0, 3.0, 3.0], "nnunet",
                                                                                     "non_contrast")
    assert (tmp_path / "nn" / "dataset.json").exists() and (tmp_path / "nn" / "imagesTr").is_dir()
    r = run("phantoms", "--out", tmp_path / "bad", "--cases", 1, "--contrast-phase", "delayed", "--quiet")
    assert r.returncode == 2 and "contrast_phase 'delayed'" in r.stderr and not (tmp_path / "bad").exists()
    r = run("phantoms", "--out", tmp_path / "pics", "--pictures", "--layout", "nnunet")
    assert r.returncode == 2 and "--layout and --contrast-phase" in r.stderr


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    """`kill`, `timeout`, `docker stop` and Slurm send SIGTERM: the command stops as on Ctrl-C, exit 143, and
    leaves no temporary file."""
    import signal
    import time
    out = tmp_path / "ph"
    proc = subprocess.Popen([EXE, "phantoms", "--out", str(out), "--cases", "400", "--shape", "24", "48", "48",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    deadline = time.monotonic() + 120
    while len(list(out.glob("case_*/segmentation.nii.gz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "miscnn-lite phantoms: terminated" in err, (proc.returncode, err)
    assert "Traceback" not in err, err
    written = list(out.glob("case_*/imaging.nii.gz"))
    assert 2 <= len(written) < 400                                    # stopped part-way, the cases written kept
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], sorted(p.name for p in out.rglob("*.tmp*"))


def test_evaluate_refuses_an_empty_metric_list(tmp_path):
    label = np.zeros((5, 10, 12), np.uint8)
    label[1:3, 2:6, 2:6] = 1
    save_case(case_from_arrays(np.zeros((5, 10, 12), np.int16), label, spacing=(3.0, 1.0, 1.0), case_id="case_00000"),
              tmp_path / "ref")
    r = run("evaluate", "--reference", tmp_path / "ref", "--prediction", tmp_path / "ref", "--metrics", "",
            "--out", tmp_path / "m.csv")
    assert r.returncode == 2 and "metrics is empty" in r.stderr, r.stderr
    assert not (tmp_path / "m.csv").exists()


def test_predict_and_evaluate_an_nnunet_dataset(tmp_path, capsys):
    "An nnU-Net dataset (or its imagesTr/) is predicted as <id>.nii.gz, as labelsTr/ names them: evaluate matches."
    pytest.importorskip("keras")
    from miscnn_lite.cli import main
    from miscnn_lite.models import unet
    from miscnn_lite.phantoms import toy_case
    from miscnn_lite.training import Segmenter
    Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2).save(tmp_path / "model")
    nn = tmp_path / "nn"
    for k in (0, 1):
        save_case(toy_case(k, shape=(16, 24, 24)), nn, layout="nnunet")
    ids = sorted(p.name[: -len(".nii.gz")] for p in (nn / "labelsTr").iterdir())
    for given in (nn, nn / "imagesTr"):
        out = tmp_path / f"pred_{given.name}"
        assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(given), "--out", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == [f"{i}.nii.gz" for i in ids]
    assert main(["evaluate", "--reference", str(nn / "labelsTr"), "--prediction", str(tmp_path / "pred_nn"),
                 "--metrics", "DICE", "--out", str(tmp_path / "m.csv")]) == 0
    import pandas as pd
    assert sorted(set(pd.read_csv(tmp_path / "m.csv").case)) == ids
    shutil.copy(nn / "imagesTr" / f"{ids[0]}_0000.nii.gz", nn / "imagesTr" / f"{ids[0]}_0001.nii.gz")
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(nn / "imagesTr"),
                 "--out", str(tmp_path / "p3")]) == 2                      # a second channel is not a case of its own
    assert f"{ids[0]}_0001" in capsys.readouterr().err and not (tmp_path / "p3").exists()


def test_train_refused_by_the_dataset_check_leaves_no_output_folder(tmp_path, capsys):
    pytest.importorskip("keras")
    from miscnn_lite.cli import main
    from miscnn_lite.phantoms import toy_case
    for k in (0, 1):
        case = toy_case(k, shape=(16, 24, 24))
        if k:
            label = case.label.copy()
            label[0, 0, 0] = 7                                     # a label value the 3 classes do not have
            case = dataclasses.replace(case, label=label)
        save_case(case, tmp_path / "data")
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "model"), "--epochs", "1"]) == 2
    assert "label values [7]" in capsys.readouterr().err and not (tmp_path / "model").exists()
