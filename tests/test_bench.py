"""The benchmark scripts' own parts: the PyTorch reference network is the library's U-Net, its FLOP
count is the hand count, and the GPU benchmark runs end to end on a CPU with --quick."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
torch_unet = pytest.importorskip("torch_unet")


@pytest.mark.parametrize("depth, base", [(1, 2), (3, 8), (4, 32)])
def test_torch_unet_has_the_library_unets_weights(depth, base):
    from miscnn_lite.models import unet
    keras_model = unet(3, depth=depth, base_filters=base)
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert trainable == sum(p.numel() for p in torch_unet.TorchUNet(3, 1, depth, base).parameters())


def test_conv_flops_hand_count():
    # filters [2, 4] on a 4³ input (64 voxels, 8 after pooling); 2 FLOPs per multiply-add
    expected = (2 * 27 * 1 * 2 * 64 + 2 * 27 * 2 * 2 * 64      # encoder level 0: 1->2, 2->2
                + 2 * 27 * 2 * 4 * 8 + 2 * 27 * 4 * 4 * 8     # level 1: 2->4, 4->4
                + 2 * 4 * 8 * (2 * 8)                          # 2×2×2 transposed 4->2: each input value to 2·8 outputs
                + 2 * 27 * 4 * 2 * 64 + 2 * 27 * 2 * 2 * 64    # decoder: 4->2, 2->2
                + 2 * 1 * 2 * 2 * 64)                          # 1×1×1 head 2->2
    assert torch_unet.conv_flops(torch_unet.TorchUNet(2, 1, depth=1, base_filters=2), (1, 4, 4, 4)) == expected


def test_dice_ce_loss_matches_the_library():
    import torch

    from miscnn_lite.losses import get_loss
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5, 6)).astype("float32")
    target = rng.integers(0, 3, size=(2, 4, 5, 6))
    ours = float(torch_unet.dice_ce_loss(torch.from_numpy(logits), torch.from_numpy(target)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    onehot = np.eye(3, dtype="float32")[target]
    library = float(get_loss("dice_ce")(onehot, np.moveaxis(probs, 1, -1)))
    assert ours == pytest.approx(library, abs=1e-4)


def test_gpu_fit_benchmark_runs_quick_on_cpu():
    "bench/gpu_fit.py: fit fed by the loader; its figures hang together (epoch = steps × step time, patches)."
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_fit.py"), "--quick"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    v = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert v["device"] == "cpu" and v["workers"] == "2" and v["precision"] == "float32"
    epoch_s, step_ms, premade_ms = float(v["fit_epoch_s"]), float(v["fit_step_ms"]), float(v["premade_step_ms"])
    assert step_ms == pytest.approx(epoch_s / 3 * 1e3, rel=1e-3)                     # 3 steps per epoch
    assert float(v["augmented_patches_per_s"]) == pytest.approx(2 * 3 / epoch_s, rel=1e-3)
    assert float(v["input_wait_fraction"]) == pytest.approx(max(0.0, 1 - premade_ms / step_ms), abs=1e-3)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_fit.py"), "--quick", "--epochs", "1"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode != 0 and "--epochs: give at least 2" in r.stderr


def test_gpu_benchmark_runs_quick_on_cpu():
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--repeats", "2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    values = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    assert values["device"] == "cpu" and values["precision"] == "float32"      # a CPU's default
    ms = {k: float(v) for k, v in values.items() if k.endswith("_ms") or k.endswith("_ratio")}
    assert ms["segmenter_vs_torch_step_ratio"] == pytest.approx(ms["segmenter_step_ms"] / ms["torch_step_ms"],
                                                                rel=2e-3)       # host batch against host batch
    assert ms["segmenter_vs_torch_device_batch_step_ratio"] == pytest.approx(
        ms["segmenter_device_batch_step_ms"] / ms["torch_device_batch_step_ms"], rel=2e-3)
    assert float(values["inference_patches_per_s"]) > 0
    # 3 × forward FLOPs of a depth-2, base-4 U-Net on 16×32×32, batch 2
    net = torch_unet.TorchUNet(3, 1, depth=2, base_filters=4)
    assert float(values["train_tflop_per_step"]) == pytest.approx(3 * 2 * torch_unet.conv_flops(net, (1, 16, 32, 32))
                                                                  / 1e12, rel=1e-3)


def test_tumor_levers_choose_on_the_other_folds():
    import pandas as pd
    import tumor_levers
    # two folds, two candidate rules; the other fold decides: fold 0 takes rule 1 (fold 1 scores it 0.9 vs 0.5),
    # fold 1 takes rule 0 (fold 0 scores it 0.6 vs 0.2), though each fold alone would prefer the other rule
    table = pd.DataFrame([dict(fold=0, rule=0, case="a", kidney=0.9, tumor=0.6),
                          dict(fold=0, rule=1, case="a", kidney=0.8, tumor=0.2),
                          dict(fold=1, rule=0, case="b", kidney=0.7, tumor=0.5),
                          dict(fold=1, rule=1, case="b", kidney=0.6, tumor=0.9)])
    kidney, tumor = tumor_levers.chosen_on_other_folds(table, ["rule"], 2)
    assert (kidney, tumor) == pytest.approx(((0.8 + 0.7) / 2, (0.2 + 0.5) / 2))


def test_tumor_rule_turns_small_tumor_components_into_kidney():
    from types import SimpleNamespace

    import tumor_levers
    label = np.zeros((1, 10, 10), np.uint8)
    label[0, :, :6] = 1                      # 60 kidney voxels
    label[0, 0, 0] = 2                       # a 1-voxel tumor: 1/60 of kidney+tumor, under 2 %
    label[0, 5:9, 1:5] = 2                   # a 16-voxel tumor: 16/60, kept
    case = SimpleNamespace(spacing=(1.0, 1.0, 1.0))
    out = tumor_levers.tumor_rule(label, case, dict(largest_only=False, min_fraction=0.02))
    assert out[0, 0, 0] == 1 and (out == 2).sum() == 16 and (out > 0).sum() == 60
    np.testing.assert_array_equal(tumor_levers.tumor_rule(label, case, dict(largest_only=True, min_fraction=0)), out)
    np.testing.assert_array_equal(tumor_levers.tumor_rule(label, case, dict(largest_only=False, min_fraction=0)), label)


def test_tumor_component_rules_read_the_tumor_probability():
    import tumor_levers
    label = np.zeros((1, 6, 8), np.uint8)
    label[0, :, :6] = 1
    label[0, 0, 0:2] = 2                     # a sure tumor component: mean probability 0.9
    label[0, 4, 4] = 2                       # an unsure one: 0.3
    p = np.zeros(label.shape, np.float32)
    p[0, 0, 0:2], p[0, 4, 4] = 0.9, 0.3
    p[0, 1, 0:3] = 0.15                      # a kidney row beside the sure tumor, over the low threshold 0.1
    p[0, 3, 7] = 0.5                         # a background voxel: never grown into
    dropped = tumor_levers.drop_unsure_tumor(label, p, 0.5)
    assert dropped[0, 4, 4] == 1 and (dropped == 2).sum() == 2 and (dropped > 0).sum() == (label > 0).sum()
    np.testing.assert_array_equal(tumor_levers.drop_unsure_tumor(label, p, 0.2), label)
    grown = tumor_levers.grow_tumor(label, p, 0.1)
    expected = label.copy()
    expected[0, 1, 0:3] = 2                  # joined to the sure tumor; no kidney over 0.1 beside the 0.3 one
    np.testing.assert_array_equal(grown, expected)
    np.testing.assert_array_equal(tumor_levers.grow_tumor(label, p, 0.2), label)


def test_tumor_runs_names_what_a_run_changed_from_the_default():
    import tumor_runs
    defaults = {"seed": 0, "epochs": 14, "slab_neighbours": 2, "augmentation": "none"}
    config = dict(seed=2, epochs=14, slab_neighbours=3, augmentation="none", data_dir="/tmp/x", not_a_parameter=1)
    assert tumor_runs.changes(config, {}, defaults) == "slab_neighbours=3"      # the seed has a column of its own
    assert tumor_runs.changes(dict(config, slab_neighbours=2), {}, defaults) == "the default"
    scratch = {"loss_options": {"batch_dice": True, "include_background": False}}   # plan.json of a scratch copy
    assert tumor_runs.changes(config, scratch, defaults) == "slab_neighbours=3, dice_background=False"
    with_parameter = dict(defaults, dice_background=True)                        # named once, from the config
    assert (tumor_runs.changes(dict(config, dice_background=False), scratch, with_parameter)
            == "slab_neighbours=3, dice_background=False")


def test_tumor_runs_names_parameters_a_run_predates_and_splits_the_tumor_dice(tmp_path):
    import json

    import tumor_runs
    defaults = {"seed": 0, "copy_paste": 0.5}
    assert tumor_runs.changes({"seed": 0}, {}, defaults) == "copy_paste=0.0"     # kept before the parameter existed
    assert tumor_runs.changes({"seed": 0, "copy_paste": 0.5}, {}, defaults) == "the default"
    scaled = {**defaults, "copy_paste_scale": 1.0}                         # pasted at their own size before it existed
    assert tumor_runs.changes({"seed": 0, "copy_paste": 0.5}, {}, scaled) == "the default"
    shrunk = {"seed": 0, "copy_paste": 0.5, "copy_paste_scale": 0.5}
    assert tumor_runs.changes(shrunk, {}, scaled) == "copy_paste_scale=0.5"
    result = {"kidney_dice": 0.92, "tumor_dice": 0.6, "tumor_dice_before_rule": 0.5,
              "test_ensemble_dice": {"tumor": 0.55}, "minutes": 7.0,
              "tumor_split": {"after_rule": {"tumor_dice_tumor_cases": 0.5131, "tumor_free_cases": 19,
                                             "tumor_free_cases_with_tumor": 2}}}
    manifest = {"config": {"seed": 1, "cpu_kernels": "eigen"}, "machine": {"cpu": "Some CPU"}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    line = tumor_runs.row(tmp_path, defaults, split=True)                   # no plan.json: a run kept in docs/
    assert line.split(" | ")[1:9] == ["copy_paste=0.0", "1", "eigen", "0.920", "0.600 (0.500)", "0.513", "2 of 19",
                                      "0.550"]
    assert "0.513" not in tumor_runs.row(tmp_path, defaults)
    del result["tumor_split"]
    (tmp_path / "result.json").write_text(json.dumps(result))
    with pytest.raises(SystemExit, match="no tumor_split"):
        tumor_runs.row(tmp_path, defaults, split=True)


def test_tumor_runs_compares_with_a_default_of_the_past():
    import tumor_runs
    now = tumor_runs.notebook_defaults()
    assert now["epochs"] == 14 and now["augmentation"] == "none" and now["phantom_spacing"] is None
    past = tumor_runs.notebook_defaults(["slab_neighbours=2", "augmentation=ct", "epochs=20"])
    assert (past["slab_neighbours"], past["augmentation"], past["epochs"]) == (2, "ct", 20)
    assert {k: v for k, v in past.items() if k not in ("slab_neighbours", "augmentation", "epochs")} == \
        {k: v for k, v in now.items() if k not in ("slab_neighbours", "augmentation", "epochs")}
    for bad in ("slab_neighbours", "not_a_parameter=1"):
        with pytest.raises(SystemExit, match="NAME=VALUE with NAME a kits19_cv parameter"):
            tumor_runs.notebook_defaults([bad])


def test_every_bench_script_answers_help():
    "Each script's --help runs (its imports of the library still resolve) and starts nothing: one process for all."
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name != "torch_unet.py")   # torch_unet: a module
    code = ("import runpy, sys, io, contextlib\n"
            "sys.path.insert(0, 'bench')   # as when a script runs: its folder is on sys.path\n"
            "for path in sys.argv[1:]:\n"
            "    sys.argv = [path, '--help']\n"
            "    out = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(out):\n"
            "            runpy.run_path(path, run_name='__main__')\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), (path, e.code)\n"
            "    else:\n"
            "        raise AssertionError(path + ': --help did not stop')\n"
            "    assert 'usage:' in out.getvalue(), (path, out.getvalue()[:200])\n"
            "    print('ok', path)\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("ok ") == len(scripts) >= 15


def test_tumor_sizes_bins_the_tumor_dice_by_tumor_voxels(tmp_path, capsys):
    import hashlib
    import json

    import nibabel as nib
    import tumor_sizes
    sizes = {"case_a": 0, "case_b": 100, "case_c": 300, "case_d": 2000, "case_e": 1090}   # tumor voxels (label 2)
    recorded = {}
    for case, n in sizes.items():
        label = np.zeros(4000, np.uint8)
        label[:n], label[n:n + 50] = 2, 1                                  # tumor voxels, then kidney
        path = tmp_path / "run" / "phantoms" / case / "segmentation.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(label.reshape(10, 20, 20), np.eye(4)), path)
        recorded[f"{case}/segmentation.nii.gz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"data_sha256": recorded}))
    dice = {"case_a": 1.0, "case_b": 0.2, "case_c": 0.5, "case_d": 0.9, "case_e": 0.7}
    rows = ["fold,case,label,metric,value"] + [f"0,{c},tumor,DICE,{v}" for c, v in dice.items()]
    rows += [f"0,{c},kidney,DICE,0.1" for c in dice] + ["1,case_e,tumor,DICE,0.3"]     # case_e in two folds: 0.5
    (tmp_path / "run" / "metrics_postprocessed.csv").write_text("\n".join(rows) + "\n")
    got = tumor_sizes.by_size(tumor_sizes.tumor_dice(tmp_path / "run"),
                              tumor_sizes.tumor_sizes(tumor_sizes.case_labels(tmp_path / "run", None, sorted(dice))))
    assert got == [("tumor-free", 1.0, 1), ("under 255 voxels", 0.2, 1), ("255-1090 voxels", pytest.approx(0.5), 2),
                   ("over 1090 voxels", 0.9, 1)]
    tumor_sizes.main([str(tmp_path / "run")])
    assert capsys.readouterr().out.splitlines()[-1] == "| run | 1.000 (1) | 0.200 (1) | 0.500 (2) | 0.900 (1) |"
    other = tmp_path / "other" / "case_c" / "segmentation.nii.gz"                 # another file under the same name
    other.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.full((10, 20, 20), 2, np.uint8), np.eye(4)), other)
    with pytest.raises(SystemExit, match="case_c/segmentation.nii.gz: not the file"):
        tumor_sizes.case_labels(tmp_path / "run", tmp_path / "other", ["case_c"])
    with pytest.raises(SystemExit, match="missing; give --phantoms"):
        tumor_sizes.case_labels(tmp_path / "run", tmp_path / "other", ["case_a"])
    with pytest.raises(SystemExit, match="no metrics_postprocessed.csv"):
        tumor_sizes.tumor_dice(tmp_path / "other")


def test_tumor_sizes_splits_the_small_tumors_by_contrast(tmp_path, capsys):
    import hashlib
    import json

    import nibabel as nib
    import tumor_sizes
    # small tumors (under 255 voxels) 20, 50 and 90 HU under a 30 HU kidney, one large tumor 10 HU under it, and a
    # tumor-free case: the contrast is |median tumor - median kidney|, the large and tumor-free cases are left out
    cases = {"case_a": (100, 10), "case_b": (100, -20), "case_c": (100, -60), "case_d": (500, 20), "case_e": (0, 0)}
    recorded = {}
    for case, (n, tumor_hu) in cases.items():
        label, image = np.zeros(4000, np.uint8), np.full(4000, -100, np.int16)
        label[:n], label[n:n + 600] = 2, 1
        image[:n] = tumor_hu
        image[n:n + 300], image[n + 300:n + 600] = 25, 35              # 300 kidney voxels at 25, 300 at 35: median 30
        for name, values in (("segmentation", label), ("imaging", image)):
            path = tmp_path / "run" / "phantoms" / case / f"{name}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(values.reshape(10, 20, 20), np.eye(4)), path)
            recorded[f"{case}/{name}.nii.gz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"data_sha256": recorded}))
    dice = {"case_a": 0.1, "case_b": 0.4, "case_c": 0.8, "case_d": 0.9, "case_e": 1.0}
    rows = ["fold,case,label,metric,value"] + [f"0,{c},tumor,DICE,{v}" for c, v in dice.items()]
    (tmp_path / "run" / "metrics_postprocessed.csv").write_text("\n".join(rows) + "\n")
    labels = tumor_sizes.case_labels(tmp_path / "run", None, sorted(dice))
    contrast = tumor_sizes.tumor_contrast(tmp_path / "run", None, labels)
    assert contrast == {"case_a": 20.0, "case_b": 50.0, "case_c": 90.0, "case_d": 10.0}
    sizes = tumor_sizes.tumor_sizes(labels)
    assert tumor_sizes.by_contrast(dice, sizes, contrast, 255) == [
        ("small, under 40 HU", 0.1, 1), ("small, 40-70 HU", 0.4, 1), ("small, over 70 HU", 0.8, 1)]
    tumor_sizes.main(["--contrast", "--contrast-bins", "60", "100", str(tmp_path / "run")])
    assert capsys.readouterr().out.splitlines()[-1] == "| run | 0.250 (2) | 0.800 (1) | - (0) |"
    (tmp_path / "run" / "phantoms" / "case_b" / "imaging.nii.gz").write_bytes(b"edited")
    with pytest.raises(SystemExit, match="case_b/imaging.nii.gz: not the file"):
        tumor_sizes.tumor_contrast(tmp_path / "run", None, {"case_b": labels["case_b"]})
    with pytest.raises(SystemExit, match="--contrast-bins 70.0 40.0"):
        tumor_sizes.main(["--contrast", "--contrast-bins", "70", "40", str(tmp_path / "run")])


def test_tumor_rule_ceiling_against_a_hand_computed_run(tmp_path, capsys):
    import nibabel as nib
    import tumor_rule_ceiling as ceiling

    def save(array, *parts):
        path = tmp_path.joinpath("run", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array.astype(np.uint8), np.eye(4)), path)

    shape = (6, 6, 12)
    # case_a: true tumors T1 (8 voxels) and T2 (8 voxels); the network predicts all of T1, half of T2 and a false
    # 4-voxel component; the rule keeps only T1's component. case_b: tumor-free, a false component the rule keeps.
    truth, before = np.zeros(shape), np.ones(shape)                      # kidney everywhere else in the predictions
    truth[0:2, 0:2, 0:2] = truth[0:2, 0:2, 8:10] = 2
    before[0:2, 0:2, 0:2] = 2                                             # T1 found whole
    before[0:2, 0:2, 8] = 2                                               # T2: 4 of 8 voxels
    before[4:6, 4:6, 4] = 2                                               # false, 4 voxels
    after = before.copy()
    after[0:2, 0:2, 8] = after[4:6, 4:6, 4] = 1
    save(truth, "phantoms", "case_a", "segmentation.nii.gz")
    save(before, "fold_0", "predictions", "case_a.nii.gz")
    save(after, "fold_0", "predictions_postprocessed", "case_a.nii.gz")
    free = np.ones(shape)
    free[3:5, 3:5, 3] = 2                                                 # a false tumor in a tumor-free case
    save(np.zeros(shape), "phantoms", "case_b", "segmentation.nii.gz")
    save(free, "fold_1", "predictions", "case_b.nii.gz")
    save(free, "fold_1", "predictions_postprocessed", "case_b.nii.gz")
    got = ceiling.run_figures(tmp_path / "run")
    # case_a: before 2·12/(16+16), rule 2·8/(16+8), oracle (T1 and T2's components) 2·12/(16+12); case_b: 0, 0, 1
    assert got == {"before": pytest.approx((24 / 32 + 0) / 2), "rule": pytest.approx((16 / 24 + 0) / 2),
                   "oracle": pytest.approx((24 / 28 + 1) / 2), "cases": 2, "found": 2, "deleted": 1, "free": 1,
                   "free_kept": 1}
    ceiling.main([str(tmp_path / "run")])
    assert capsys.readouterr().out.splitlines()[-1] == "| run | 0.375 | 0.333 | 0.929 | 1 of 2 | 1 of 1 |"
    (tmp_path / "run" / "fold_1" / "predictions_postprocessed" / "case_b.nii.gz").unlink()
    with pytest.raises(SystemExit, match="case_b.nii.gz: missing"):
        ceiling.run_figures(tmp_path / "run")
    with pytest.raises(SystemExit, match="finished kits19_cv run on phantoms"):
        ceiling.run_figures(tmp_path / "fold_0")
