"""Engine: resume after a real SIGKILL, predict to NIfTI in the original orientation, safe loading."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from miscnn_lite.io import affine_from_spacing, load_nifti, save_case, save_nifti
from miscnn_lite.phantoms import toy_case

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(target_spacing=None, hu_window=[-100, 400], augmentation=False)
ARGS = dict(epochs=4, iterations=4, batch_size=2, patch_shape=[16, 16, 16], base_filters=4, depth=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for s in range(4):
        save_case(toy_case(s, tumor=s != 3), root)
    return root


def train_process(data, out, epochs=4, **extra):
    code = textwrap.dedent(f"""
        from miscnn_lite.training import train_command
        train_command({str(data)!r}, {str(out)!r}, config={CFG!r}, progress=False,
                      **{dict(ARGS, epochs=epochs, **extra)!r})
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def state(out):
    p = Path(out) / "checkpoint" / "state.json"
    return json.loads(p.read_text()) if p.is_file() else None


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "model"
    proc = train_process(data, out)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    return out


def test_resume_after_sigkill_matches_an_uninterrupted_run(data, reference, tmp_path):
    out = tmp_path / "model"
    proc = train_process(data, out)
    deadline = time.time() + 300
    while (state(out) or {}).get("epoch", 0) < 2:          # kill it inside epoch 3
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "training did not reach epoch 2"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = state(out)["epoch"]
    assert killed_at in (2, 3)

    again = train_process(data, out)                          # the same command resumes
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log

    import pandas as pd
    tsv = pd.read_csv(out / "training_log.tsv", sep="\t")
    assert tsv["epoch"].tolist() == [1, 2, 3, 4]             # each finished epoch exactly once
    ref_tsv = pd.read_csv(reference / "training_log.tsv", sep="\t")
    np.testing.assert_allclose(tsv["loss"], ref_tsv["loss"], rtol=1e-3)
    s, r = state(out), state(reference)
    assert s["epoch"] == 4 and s["learning_rate"] == r["learning_rate"]
    w, wr = weights(out / "checkpoint" / s["weights"]), weights(reference / "checkpoint" / r["weights"])
    assert w.keys() == wr.keys()
    for k in w:
        np.testing.assert_allclose(w[k], wr[k], rtol=1e-3, atol=1e-4, err_msg=k)
    with h5py.File(out / "checkpoint" / s["weights"], "r") as f:     # the weights file holds the optimizer too
        assert int(f["optimizer/vars/0"][()]) == 4 * ARGS["iterations"]  # Adam's step counter went on from epoch 2/3
    assert "optimizer" not in s and sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "epoch_0003.state.json", "epoch_0003.weights.h5", "epoch_0004.state.json", "epoch_0004.weights.h5",
        "state.json"]                                            # the last two epochs, one weights file each
    assert not list((out / "checkpoint").glob(".*tmp*")), "no temporary files left behind"


def test_one_loader_thread_trains_exactly_like_two(data, reference, tmp_path):
    "workers=1 (TensorFlow prefetches) and the default 2 (Keras's thread enqueuer) feed the same batches."
    out = tmp_path / "model"
    proc = train_process(data, out, workers=1)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert json.loads((out / "config.json").read_text())["workers"] == 1
    assert json.loads((reference / "config.json").read_text())["workers"] == 2
    import pandas as pd
    one, two = (pd.read_csv(p / "training_log.tsv", sep="\t") for p in (out, reference))
    np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-5)
    np.testing.assert_allclose(one["val_loss"], two["val_loss"], rtol=1e-5)


def test_rerun_of_a_finished_run_does_nothing(data, reference):
    before = (reference / "training_log.tsv").read_text()
    proc = train_process(data, reference)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert (reference / "training_log.tsv").read_text() == before


def test_predict_unlabelled_files_in_their_own_orientation(reference, tmp_path):
    from miscnn_lite.training import predict_command
    case = toy_case(7)
    affine = affine_from_spacing((3.0, 1.5, 1.5), orientation="RAS", origin=(10, -20, 5))
    src = tmp_path / "in"
    save_nifti(src / "scan_a.nii.gz", case.image, affine)       # no label anywhere
    written = predict_command(reference, src, tmp_path / "pred", progress=False)
    assert [p.name for p in written] == ["scan_a.nii.gz"]
    pred, pred_affine = load_nifti(written[0])
    np.testing.assert_allclose(pred_affine, affine)
    assert pred.shape == case.image.shape and pred.dtype == np.uint8
    assert set(np.unique(pred)) <= {0, 1, 2}


def test_lambda_model_folder_is_refused(reference, tmp_path):
    import shutil

    import keras

    from miscnn_lite.training import Segmenter
    folder = tmp_path / "evil"
    shutil.copytree(reference, folder, ignore=shutil.ignore_patterns("cache", "checkpoint"))
    inp = keras.Input((None, None, None, 1))
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 0 + 1)(inp)).save(folder / "model.keras")
    with pytest.raises(ValueError, match="model.keras: fails its SHA-256 checksum"):
        Segmenter.load(folder)                        # a swapped model file is refused before it is opened
    (folder / "checksums.json").unlink()              # and without checksums, Keras' safe mode refuses the Lambda
    with pytest.raises(ValueError, match="Lambda layer"):
        Segmenter.load(folder)


def test_bad_config_file(data, tmp_path):
    from miscnn_lite.training import train_command
    cfg = tmp_path / "c.yaml"; cfg.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['epochz'\]"):
        train_command(data, tmp_path / "m", config=cfg, progress=False)


@pytest.mark.parametrize("option", ["mixed_bfloat16", "strategy"])
def test_mixed_precision_and_one_device_strategy_train_and_predict(option, tmp_path):
    import tensorflow as tf

    from miscnn_lite.models import unet
    from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
    from miscnn_lite.training import Segmenter
    kwargs = ({"mixed_precision": "mixed_bfloat16"} if option == "mixed_bfloat16"
              else {"strategy": tf.distribute.MirroredStrategy(["/cpu:0"])})
    seg = Segmenter(unet(3, depth=2, base_filters=4), Pipeline([ClipHU(-100, 400), ZScore("dataset")]),
                    patch_shape=(16, 16, 16), iterations=2, **kwargs)
    log = seg.fit([toy_case(s) for s in range(2)], [toy_case(5)], epochs=2, out=tmp_path / "m")
    assert log["epoch"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    if option == "mixed_bfloat16":
        assert seg.model.layers[1].dtype_policy.name == "mixed_bfloat16"
        assert seg.model.outputs[0].dtype == "float32"
    else:
        assert seg.strategy.num_replicas_in_sync == 1
    case = toy_case(9)
    assert seg.predict([case], progress=False)[0].shape == case.shape
    again = Segmenter.load(tmp_path / "m")                     # the folder reloads in safe mode
    assert again.predict([case], progress=False)[0].shape == case.shape


def test_float16_policy_wraps_the_optimizer_in_loss_scaling():
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(8, 8, 8), mixed_precision="mixed_float16")
    assert type(seg.model.optimizer).__name__ == "LossScaleOptimizer"


def test_predict_through_resampling_returns_the_original_grid(tmp_path):
    from miscnn_lite.models import unet
    from miscnn_lite.preprocessing import ClipHU, Pipeline, Resample, ZScore
    from miscnn_lite.training import Segmenter
    seg = Segmenter(unet(3, depth=2, base_filters=4),
                    Pipeline([Resample((2.0, 2.0, 2.0)), ClipHU(-100, 400), ZScore("image")]),
                    patch_shape=(16, 16, 16), mirror_axes=(0, 2))
    case = toy_case(4)
    written = seg.predict([case], out=tmp_path, progress=False)
    pred, affine = load_nifti(written[0])
    assert written[0].name == f"{case.id}.nii.gz"
    assert pred.shape == case.shape
    np.testing.assert_allclose(affine, case.original_affine)


def _segmenter_before_plans(opts):
    "The Segmenter that `training._train` built from checked settings before TrainingPlan existed (commit d9dc936)."
    from miscnn_lite.augmentation import ct_augmentation
    from miscnn_lite.models import build_model, model_options, slice_model
    from miscnn_lite.patching import PatchSampler
    from miscnn_lite.preprocessing import ClipHU, Pipeline, Resample, ZScore
    from miscnn_lite.training import Segmenter
    takes = model_options(opts["model"])
    network = build_model(opts["model"], opts["n_classes"], ndim=opts["ndim"],
                          **{k: opts[k] for k in ("depth", "base_filters", "normalization") if k in takes})
    steps = [Resample(tuple(opts["target_spacing"]))] if opts["target_spacing"] else []
    steps += [ClipHU(*opts["hu_window"])] if opts["hu_window"] else []
    return Segmenter(slice_model(network) if opts["ndim"] == 2 else network, Pipeline(steps + [ZScore("dataset")]),
                     patch_shape=tuple(opts["patch_shape"]),
                     sampler=PatchSampler(tuple(opts["patch_shape"]), opts["foreground_fraction"]),
                     loss=opts["loss"], augmentation=ct_augmentation(opts["ndim"]) if opts["augmentation"] else None,
                     learning_rate=opts["learning_rate"], batch_size=opts["batch_size"], iterations=opts["iterations"],
                     overlap=opts["overlap"], mirror_axes=tuple(opts["mirror_axes"]), seed=opts["seed"],
                     workers=opts["workers"], mixed_precision=opts["mixed_precision"], class_names=None)


@pytest.mark.parametrize("settings", [
    {},
    dict(model="nnunet_like", augmentation=False, target_spacing=None, mirror_axes=[0, 1], seed=7,
         mixed_precision="mixed_bfloat16", foreground_fraction=0.5, n_classes=2),
    dict(model="msd_net", ndim=2, patch_shape=[32, 32], hu_window=None, loss="tanimoto_ce", learning_rate=0.01),
], ids=["unet_3d", "nnunet_like_bfloat16", "msd_net_2d"])
def test_train_command_segmenter_through_a_plan_is_the_one_built_before(settings):
    "`_train` builds its Segmenter through plan_from_settings: the same network, weights, pipeline, sampler, config."
    from miscnn_lite.training import Segmenter, check_train_settings, plan_from_settings
    opts = check_train_settings({**dict(depth=2, base_filters=4, patch_shape=[16, 32, 32]), **settings})
    old, new = _segmenter_before_plans(opts), Segmenter.from_plan(plan_from_settings(opts))
    assert [type(layer).__name__ for layer in new.model.layers] == [type(layer).__name__ for layer in old.model.layers]
    old_weights, new_weights = old.model.get_weights(), new.model.get_weights()
    assert len(new_weights) == len(old_weights) > 0
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(old_weights, new_weights))
    assert new.pipeline.to_dict() == old.pipeline.to_dict()
    assert new.sampler == old.sampler and new.config == old.config
    assert (None if new.augmentation is None else new.augmentation.to_dict()) == \
        (None if old.augmentation is None else old.augmentation.to_dict())


def test_model_folder_written_before_plans_loads_without_a_plan(tmp_path):
    """A folder as `Segmenter.save` wrote it before plans (no plan.json, no checksum of one) still loads, with
    `plan` None; the same folder with its plan.json gives the plan back."""
    from miscnn_lite.training import Segmenter, check_train_settings, plan_from_settings
    opts = check_train_settings(dict(depth=2, base_filters=4, patch_shape=[16, 16, 16], target_spacing=None))
    seg = Segmenter.from_plan(plan_from_settings(opts))
    folder = seg.save(tmp_path / "model")
    assert Segmenter.load(folder).plan == seg.plan
    (folder / "plan.json").unlink()                  # lost from a folder that listed it: refused
    with pytest.raises(FileNotFoundError, match="plan.json is missing, but checksums.json lists it"):
        Segmenter.load(folder)
    sums = json.loads((folder / "checksums.json").read_text())
    del sums["plan.json"]
    (folder / "checksums.json").write_text(json.dumps(sums))
    assert sorted(p.name for p in folder.iterdir()) == ["checksums.json", "config.json", "model.keras",
                                                         "pipeline.json"]   # the files of a folder before plans
    old = Segmenter.load(folder)
    assert old.plan is None and old.config == seg.config and old.pipeline == seg.pipeline
    batch = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(old.model.predict_on_batch(batch), seg.model.predict_on_batch(batch), atol=1e-6)


# ---------------------------------------------------------------- from a review of the training API's edge cases
def tiny_segmenter(**settings):
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter
    return Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), **{"batch_size": 2, **settings})


@pytest.mark.parametrize("setting,value", [("batch_size", 0), ("iterations", -3), ("learning_rate", -1e-3),
                                           ("overlap", 1.0), ("weighting", "foo"), ("mirror_axes", (0, 0)),
                                           ("lr_factor", 2), ("workers", -1), ("mixed_precision", "float64x")])
def test_segmenter_refuses_settings_out_of_range(setting, value):
    from miscnn_lite.io import SettingsError
    with pytest.raises(SettingsError, match=f"Segmenter: {setting}="):
        tiny_segmenter(**{setting: value})


def test_segmenter_takes_numpy_numbers_and_refuses_a_string_for_a_bool():
    from miscnn_lite.io import SettingsError
    seg = tiny_segmenter(learning_rate=np.float32(1e-3), ema_momentum=np.float64(0.9))   # Keras's Adam wants a float
    assert type(seg.settings["learning_rate"]) is float and seg.settings["ema_momentum"] == 0.9
    with pytest.raises(SettingsError, match="use_multiprocessing='no': give True"):   # a non-empty string is truthy
        tiny_segmenter(use_multiprocessing="no")


def test_load_overrides_reach_the_plan_or_drop_it(tmp_path):
    "Overrides a plan holds go into `.plan` (saved, it rebuilds the same Segmenter); objects it cannot hold drop it."
    from miscnn_lite.io import SettingsError
    from miscnn_lite.patching import PatchSampler
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        loss_options=dict(batch_dice=True), schedule=dict(iterations=1, batch_size=2), workers=0)
    Segmenter.from_plan(plan).fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    loaded = Segmenter.load(tmp_path / "m", patch_shape=(32, 32, 32), loss="dice", mirror_axes=(2,))
    assert (loaded.plan.patch_shape, loaded.plan.loss, loaded.plan.loss_options) == ([32, 32, 32], "dice", {})
    assert loaded.plan.prediction["mirror_axes"] == [2]
    assert Segmenter.from_plan(loaded.plan).patch_shape == loaded.patch_shape == (32, 32, 32)
    assert Segmenter.load(tmp_path / "m", sampler=PatchSampler((16, 16, 16), foreground_fraction=1.0)).plan is None
    with pytest.raises(SettingsError, match=r"from_plan: \['seed'\] are settings the plan holds.*replace\(seed=...\)"):
        Segmenter.from_plan(plan, seed=3)


@pytest.mark.parametrize("changes,words", [(dict(loss=["dice"]), "loss=['dice']: give a name"),
                                           (dict(model=["unet"]), "model=['unet']: give a name"),
                                           (dict(class_names="abc"), "class_names='abc': give a list of names"),
                                           (dict(class_names=5), "class_names=5: give a list")])
def test_plan_fields_of_the_wrong_type_are_named(changes, words, tmp_path):

    from miscnn_lite.io import SettingsError
    from miscnn_lite.plan import TrainingPlan
    with pytest.raises(SettingsError, match=words.replace("[", r"\[").replace("]", r"\]")):
        TrainingPlan(**changes)
    (tmp_path / "plan.json").write_text(json.dumps({**TrainingPlan().to_dict(), **changes}))
    with pytest.raises(SettingsError, match="plan.json: TrainingPlan: "):           # the file named, not a TypeError
        TrainingPlan.load(tmp_path / "plan.json")


def my_own_loss(y_true, y_pred):
    import keras
    return keras.ops.mean(keras.ops.square(y_true - y_pred))


def test_a_model_trained_with_a_loss_of_ones_own_loads_with_it_given_again(tmp_path):
    from miscnn_lite.io import SettingsError
    from miscnn_lite.training import Segmenter
    folder = tiny_segmenter(loss=my_own_loss).save(tmp_path / "m")
    with pytest.raises(SettingsError, match=r"config.json: its loss cannot be rebuilt here .*loss=my_loss"):
        Segmenter.load(folder)
    assert Segmenter.load(folder, loss=my_own_loss).loss is my_own_loss


def test_predict_and_evaluate_refuse_what_the_model_cannot_read():
    from dataclasses import replace

    from miscnn_lite.io import DataError
    seg, case = tiny_segmenter(), toy_case(0)
    image = case.image.astype(np.float32)
    image[3, 4, 5] = np.nan
    with pytest.raises(DataError, match=r"1 image voxel\(s\) are NaN or infinite, e.g. at \(3, 4, 5\)"):
        seg.predict_probabilities(replace(case, image=image))
    with pytest.raises(DataError, match="image dtype complex128 is not real numbers"):
        seg.predict_probabilities(replace(case, image=case.image.astype(complex)))
    with pytest.raises(DataError, match="2 image channel"):
        seg.predict_case(replace(case, image=np.stack([case.image] * 2, axis=-1)))
    with pytest.raises(DataError, match="the model knows classes 0..2"):
        seg.evaluate([replace(case, label=np.where(case.label == 2, 5, case.label).astype(np.uint8))])


def test_load_keeps_the_plan_augmentation_and_resume_false_refits_the_pipeline(tmp_path):
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.preprocessing import ZScore
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(iterations=1, batch_size=2), augmentation="mirror", workers=0,
                        preprocessing=[ZScore(mode="dataset")])
    seg = Segmenter.from_plan(plan)
    seg.fit(toy_case(0), epochs=1, out=tmp_path / "m")                # one Case, not a list, trains too
    loaded = Segmenter.load(tmp_path / "m")
    assert loaded.augmentation is not None and repr(loaded.augmentation) == repr(plan.build_augmentation())
    before = (tmp_path / "m" / "pipeline.json").read_text()
    Segmenter.from_plan(plan).fit([toy_case(5, tumor=False)], epochs=1, out=tmp_path / "m", resume=False)
    assert (tmp_path / "m" / "pipeline.json").read_text() != before    # fitted on the new cases


def test_fit_without_epochs_trains_the_plan_epochs(tmp_path):
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(epochs=2, iterations=1, batch_size=2), workers=0)
    log = Segmenter.from_plan(plan).fit([toy_case(0)], out=tmp_path / "m")
    assert list(log["epoch"]) == [1, 2]


def test_fit_refuses_to_continue_a_run_on_other_cases(tmp_path):
    "A model folder remembers what it was trained on; Segmenter.fit continues it only on the same cases."
    from miscnn_lite.io import SettingsError
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(iterations=1, batch_size=2), workers=0)
    Segmenter.from_plan(plan).fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    with pytest.raises(SettingsError, match=r"is another dataset \(cases differ: toy_000, toy_001"):
        Segmenter.from_plan(plan).fit([toy_case(1)], epochs=2, out=tmp_path / "m")
    log = Segmenter.from_plan(plan).fit([toy_case(1)], epochs=1, out=tmp_path / "m", resume=False)
    assert log["epoch"].tolist() == [1]
    from miscnn_lite.io import open_dataset
    from miscnn_lite.loading import ReaderItem
    for k in range(3):
        save_case(toy_case(k), tmp_path / "data")
    reader = open_dataset(tmp_path / "data")
    a, b, c = (ReaderItem(reader, cid) for cid in reader.case_ids)
    Segmenter.from_plan(plan).fit([a], [b], epochs=1, out=tmp_path / "r")
    with pytest.raises(SettingsError, match=f"these are other cases of {tmp_path / 'data'} .train/val changed."):
        Segmenter.from_plan(plan).fit([a], [c], epochs=2, out=tmp_path / "r")


def test_fit_refuses_val_cases_from_train_and_no_cases_without_making_a_folder(tmp_path):
    from miscnn_lite.io import DataError, MiscnnError
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(iterations=1, batch_size=2), workers=0)
    train = [toy_case(0), toy_case(1)]
    with pytest.raises(DataError, match=r"val: case\(s\) \['toy_001'\] are also in train"):
        Segmenter.from_plan(plan).fit(train, [toy_case(1), toy_case(2)], epochs=1, out=tmp_path / "a" / "m")
    with pytest.raises(MiscnnError, match="no cases given"):
        Segmenter.from_plan(plan).fit([], [toy_case(2)], epochs=1, out=tmp_path / "a" / "m")
    seven = toy_case(3)
    seven.label[seven.label == 2] = 7                            # a class the 3-class model does not have
    with pytest.raises(DataError, match="7"):                    # refused by validate_cases, which records in cache/
        Segmenter.from_plan(plan).fit([toy_case(0), seven], epochs=1, out=tmp_path / "a" / "m")
    assert not (tmp_path / "a").exists()


def test_a_run_that_stopped_early_is_finished(tmp_path):
    "Running fit again on an early-stopped run trains nothing more (it used to add an epoch per call)."
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4, normalization="instance"), patch_shape=[16, 16, 16],
                        schedule=dict(iterations=1, batch_size=1, stop_patience=1, lr_patience=1),
                        optimizer=dict(learning_rate=1e-12), workers=0)
    first = Segmenter.from_plan(plan).fit([toy_case(0)], [toy_case(1)], epochs=6, out=tmp_path / "m")
    assert len(first) < 6                              # stopped early
    again = Segmenter.from_plan(plan).fit([toy_case(0)], [toy_case(1)], epochs=6, out=tmp_path / "m")
    assert again["epoch"].tolist() == first["epoch"].tolist()


@pytest.mark.parametrize("group,setting,value", [("schedule", "batch_size", 0), ("prediction", "overlap", 1.0),
                                                 ("optimizer", "learning_rate", -1.0)])
def test_plan_refuses_settings_out_of_range(group, setting, value):
    "A plan.json with a value no Segmenter would take is refused when read, naming the setting."
    from miscnn_lite.io import SettingsError
    from miscnn_lite.plan import TrainingPlan
    with pytest.raises(SettingsError, match=f"TrainingPlan: {setting}="):
        TrainingPlan(**{group: {setting: value}})


# ---------------------------------------------------------------- a second review: folders that mix two runs
def small_plan(**changes):
    from miscnn_lite.plan import TrainingPlan
    return TrainingPlan(**{"model_options": dict(depth=2, base_filters=4), "patch_shape": [16, 16, 16],
                           "schedule": dict(iterations=1, batch_size=2), "workers": 0, **changes})


def test_fit_refuses_to_continue_a_run_with_other_settings(tmp_path):
    "A folder holding a run continues only that run: other settings or another network are named, not adopted."
    from miscnn_lite.io import SettingsError
    from miscnn_lite.training import Segmenter
    Segmenter.from_plan(small_plan()).fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    with pytest.raises(SettingsError, match=r"other settings \(.*plan.seed.*seed differ"):
        Segmenter.from_plan(small_plan(seed=5)).fit([toy_case(0)], epochs=2, out=tmp_path / "m")
    with pytest.raises(SettingsError, match=r"plan.model_options, architecture differ"):
        Segmenter.from_plan(small_plan(model_options=dict(depth=2, base_filters=8))).fit(
            [toy_case(0)], epochs=2, out=tmp_path / "m")
    log = Segmenter.load(tmp_path / "m").fit([toy_case(0)], epochs=2, out=tmp_path / "m")   # the same run goes on
    assert log["epoch"].tolist() == [1, 2]


def test_an_interrupted_new_run_does_not_leave_the_old_model_with_new_preprocessing(tmp_path):
    import keras

    from miscnn_lite.io import MissingFileError
    from miscnn_lite.preprocessing import ClipHU, ZScore
    from miscnn_lite.training import Segmenter

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    Segmenter.from_plan(small_plan(preprocessing=[ZScore(mode="dataset")])).fit([toy_case(0)], epochs=1,
                                                                                 out=tmp_path / "m")
    new = Segmenter.from_plan(small_plan(preprocessing=[ClipHU(-50, 50), ZScore(mode="dataset")], seed=9))
    with pytest.raises(KeyboardInterrupt):
        new.fit([toy_case(0)], epochs=1, out=tmp_path / "m", resume=False, callbacks=[Interrupt()])
    with pytest.raises(MissingFileError, match="no model.keras"):
        Segmenter.load(tmp_path / "m")


def test_loading_a_run_that_stopped_says_how_to_finish_it(tmp_path):
    import keras

    from miscnn_lite.io import MissingFileError
    from miscnn_lite.training import Segmenter

    class StopInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Segmenter.from_plan(small_plan()).fit([toy_case(0)], epochs=3, out=tmp_path / "m",
                                              callbacks=[StopInSecondEpoch()])
    with pytest.raises(MissingFileError, match="training stopped after epoch 1"):
        Segmenter.load(tmp_path / "m")


def test_a_run_without_plan_or_pipeline_removes_the_last_runs(tmp_path):
    from miscnn_lite.augmentation import ct_augmentation
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter
    Segmenter.from_plan(small_plan(augmentation="mirror")).fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    bare = Segmenter(unet(3, depth=2, base_filters=8), patch_shape=(16, 16, 16), workers=0, iterations=1,
                     augmentation=ct_augmentation(3))
    bare.fit([toy_case(0)], epochs=1, out=tmp_path / "m", resume=False)
    loaded = Segmenter.load(tmp_path / "m")
    assert loaded.plan is None and not (tmp_path / "m" / "plan.json").exists()
    assert repr(loaded.augmentation) == repr(ct_augmentation(3))          # kept in config.json without a plan
    assert "plan.json" not in json.loads((tmp_path / "m" / "checksums.json").read_text())


def test_mixed_precision_reaches_the_2d_network_inside_a_slice_model_and_survives_load(tmp_path):
    import keras

    from miscnn_lite.models import slice_model, unet
    from miscnn_lite.training import Segmenter, with_dtype_policy
    wrapped = with_dtype_policy(slice_model(unet(3, ndim=2, depth=2, base_filters=4)), "mixed_bfloat16")
    inner = next(layer for layer in wrapped.layers if isinstance(layer, keras.Model))
    convs = {layer.dtype_policy.name for layer in inner.layers if "conv" in type(layer).__name__.lower()}
    assert convs == {"mixed_bfloat16"}
    seg = Segmenter.from_plan(small_plan(mixed_precision="mixed_float16", schedule=dict(iterations=1, batch_size=1),
                                         model_options=dict(depth=2, base_filters=4, downsampling="strided")))
    seg.fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    loaded = Segmenter.load(tmp_path / "m")
    assert loaded.settings["mixed_precision"] == "mixed_float16"
    assert isinstance(loaded.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert loaded.fit([toy_case(0)], epochs=2, out=tmp_path / "m")["epoch"].tolist() == [1, 2]


def test_segmenter_settings_that_would_disagree_are_refused():
    from miscnn_lite.io import SettingsError
    from miscnn_lite.models import unet
    from miscnn_lite.patching import PatchSampler
    from miscnn_lite.training import Segmenter
    with pytest.raises(SettingsError, match=r"patch_shape=\(16, 16, 16\) differs from the sampler's"):
        Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), sampler=PatchSampler((8, 8, 8)))
    for changes, message in [(dict(schedule=dict(epochs=0)), "epochs=0"),
                             (dict(schedule=dict(lr_schedule="cosine")), "lr_schedule='cosine'"),
                             (dict(patch_shape=16), "patch_shape=16"),
                             (dict(class_names=["background", "kidney"]), "2 names for n_classes=3")]:
        with pytest.raises(SettingsError, match=message):
            small_plan(**changes)
    with pytest.raises(SettingsError, match="epochs=0"):
        Segmenter.from_plan(small_plan()).fit([toy_case(0)], epochs=0)


def test_a_label_remap_in_the_pipeline_is_what_the_model_learns_and_is_scored_on(tmp_path):
    from miscnn_lite.models import unet
    from miscnn_lite.preprocessing import LabelRemap, Pipeline, ZScore
    from miscnn_lite.training import Segmenter
    seg = Segmenter(unet(2, depth=2, base_filters=4), Pipeline([LabelRemap({0: 0, 1: 1, 2: 1}), ZScore("dataset")]),
                    patch_shape=(16, 16, 16), workers=0, iterations=1)
    seg.fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    table = seg.evaluate([toy_case(1)])
    assert table["label"].tolist() == [1] and 0 <= table["dice"].item() <= 1


def test_plateau_log_shows_the_rate_each_epoch_trained_with(tmp_path):
    from miscnn_lite.training import Segmenter
    plan = small_plan(schedule=dict(iterations=1, batch_size=1, lr_patience=0, lr_factor=0.5),
                      optimizer=dict(learning_rate=1e-9),
                      model_options=dict(depth=2, base_filters=4, normalization="instance"))
    seg = Segmenter.from_plan(plan)
    log = seg.fit([toy_case(0)], [toy_case(1)], epochs=3, out=tmp_path / "m")
    np.testing.assert_allclose(log["learning_rate"], seg.model.history.history["learning_rate"])


def test_load_overrides_the_prediction_window_and_names_unknown_settings(tmp_path):
    from miscnn_lite.io import SettingsError
    from miscnn_lite.training import Segmenter
    Segmenter.from_plan(small_plan()).fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    wide = Segmenter.load(tmp_path / "m", patch_shape=(16, 32, 32))
    assert wide.patch_shape == (16, 32, 32) and wide.sampler.patch_shape == (16, 32, 32)
    with pytest.raises(SettingsError, match=r"unknown setting\(s\) \['mirror_axs'\]"):
        Segmenter.load(tmp_path / "m", mirror_axs=(0,))


def test_a_custom_augmentation_saves_and_loads_and_finetuning_in_place_keeps_the_model(tmp_path):
    "A transform that cannot describe itself is not kept in config.json (a warning on load, not a refusal); a"
    " loaded model trained on in its own folder without checkpoints keeps model.keras until it saves a new one."
    import shutil

    import keras

    from miscnn_lite.augmentation import AugmentationPipeline, Mirror
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter

    def invert(image, label, rng):
        return -image, label

    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), workers=0, iterations=1,
                    augmentation=AugmentationPipeline([Mirror(), invert]))
    seg.fit([toy_case(0)], epochs=1, out=tmp_path / "m")
    loaded = Segmenter.load(tmp_path / "m")
    assert loaded.augmentation is None
    shutil.rmtree(tmp_path / "m" / "checkpoint")

    class Interrupt(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loaded.fit([toy_case(0)], epochs=2, out=tmp_path / "m", callbacks=[Interrupt()])
    assert Segmenter.load(tmp_path / "m").n_classes == 3                     # model.keras is still there


def test_evaluate_scores_a_perfect_remapped_model_one():
    "With LabelRemap({0: 0, 1: 0, 2: 1}) (a tumor-only model) the prediction is already in the model's classes."
    from miscnn_lite.io import case_from_arrays
    from miscnn_lite.models import unet
    from miscnn_lite.preprocessing import LabelRemap, Pipeline
    from miscnn_lite.training import Segmenter
    label = np.zeros((16, 16, 16), np.uint8)
    label[4:12, 4:12, 4:12] = 1
    label[6:10, 6:10, 6:10] = 2
    case = case_from_arrays(np.zeros(label.shape, np.float32), label, spacing=(1.0, 1.0, 1.0))
    seg = Segmenter(unet(2, depth=2, base_filters=4), Pipeline([LabelRemap({0: 0, 1: 0, 2: 1})]),
                    patch_shape=(16, 16, 16))
    perfect = np.eye(2, dtype=np.float32)[seg.model_labels(label)]
    seg.predict_probabilities = lambda c, progress=False, mirror_axes=None: perfect
    assert seg.evaluate([case])["dice"].tolist() == [1.0]


def test_a_folder_from_before_ema_momentum_continues(tmp_path):
    "config.json and plan.json written before `ema_momentum`, `per_channel` and `modalities`: the same run continues."
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter, read_log
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16], augmentation="ct",
                        schedule=dict(iterations=2, epochs=1))
    cases, out = [toy_case(s) for s in range(2)], tmp_path / "run"
    Segmenter.from_plan(plan).fit(cases, None, out=out)

    def strip_config(d):                                       # nor the augmentation's per_channel fields
        d.pop("ema_momentum")
        for t in d["augmentation"]["transforms"]:
            t.pop("per_channel", None)
            t.pop("modalities", None)
    for name, strip in (("config.json", strip_config),
                        ("plan.json", lambda d: d["optimizer"].pop("ema_momentum"))):
        d = json.loads((out / name).read_text())
        strip(d)
        (out / name).write_text(json.dumps(d))
    (out / "checksums.json").unlink()                          # the files were edited on purpose
    Segmenter.load(out).fit(cases, None, epochs=2, out=out)
    assert read_log(out / "training_log.tsv")["epoch"].tolist() == [1, 2]
    with pytest.raises(Exception, match="ema_momentum"):          # averaging now would be another run
        Segmenter.from_plan(plan.with_settings(ema_momentum=0.9)).fit(cases, None, epochs=3, out=out)


def test_the_pipeline_is_fitted_one_case_in_memory_at_a_time(tmp_path, monkeypatch):
    "Segmenter.fit streams the training cases into Pipeline.fit: each is read when the fit reaches it."
    from miscnn_lite import training
    from miscnn_lite.models import unet
    from miscnn_lite.preprocessing import Pipeline, ZScore
    for s in range(3):
        save_case(toy_case(s), tmp_path / "data")
    read, seen = [], []
    real_source = training.item_source

    def counting_source(item, *args, **kwargs):
        case_id, load, paths = real_source(item, *args, **kwargs)
        return case_id, lambda: (read.append(case_id), load())[1], paths
    monkeypatch.setattr(training, "item_source", counting_source)

    class Watched(ZScore):
        def fit(self, cases):
            def watch(stream):
                for case in stream:
                    seen.append(len(read))                 # cases read when this one arrives
                    yield case
            return super().fit(watch(cases))
    seg = training.Segmenter(unet(3, depth=2, base_filters=4), Pipeline([Watched("dataset")]), patch_shape=(16, 16, 16))
    seg._fit_pipeline(sorted((tmp_path / "data").iterdir()), None)
    assert seen == [1, 2, 3] and seg.pipeline.fitted


def test_predict_refuses_voxel_sizes_training_would_refuse(tmp_path):
    "A header in metres (0.001 mm voxels) predicted all background without a word; now refused as fit refuses it."
    import dataclasses

    from miscnn_lite.io import DataError, SettingsError
    from miscnn_lite.models import unet
    from miscnn_lite.training import TRAIN_SETTINGS_FILE, Segmenter, check_train_settings
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16))
    path = save_nifti(tmp_path / "metres.nii.gz", toy_case(0).image, affine_from_spacing((0.003, 0.001, 0.001)))
    case = dataclasses.replace(toy_case(0), affine=affine_from_spacing((0.003, 0.001, 0.001)), image_path=path)
    with pytest.raises(DataError, match=r"metres.nii.gz: spacing \(0.003, 0.001, 0.001\) mm is outside the plausible"):
        seg.predict_case(case)
    seg.spacing_range = None                                   # voxels that small are real here
    assert seg.predict_case(case).shape == case.image.shape
    seg.save(tmp_path / "model")
    assert Segmenter.load(tmp_path / "model").spacing_range == (0.05, 20.0)
    (tmp_path / "model" / TRAIN_SETTINGS_FILE).write_text(json.dumps(check_train_settings({"spacing_range": None})))
    assert Segmenter.load(tmp_path / "model").spacing_range is None    # a train command's setting carries over
    with pytest.raises(SettingsError, match="model='unet' is not a Keras model"):
        Segmenter("unet", patch_shape=(16, 16, 16))


def test_a_run_is_not_cut_back_and_a_model_older_than_its_run_is_named(tmp_path):
    "Fewer epochs than a folder's run has trained are refused; a run continued past its model.keras warns at load."
    import keras

    from miscnn_lite.io import SettingsError
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.training import Segmenter
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(iterations=2, epochs=2))
    cases, out = [toy_case(s) for s in range(2)], tmp_path / "run"
    Segmenter.from_plan(plan).fit(cases, None, out=out)
    before = (out / "model.keras").read_bytes()
    with pytest.raises(SettingsError, match="has trained 2 epochs already; epochs=1"):
        Segmenter.from_plan(plan).fit(cases, None, epochs=1, out=out)
    assert (out / "model.keras").read_bytes() == before             # nothing rewritten

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:                                            # after epoch 3's checkpoint: killed
                raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        Segmenter.from_plan(plan).fit(cases, None, epochs=4, out=out, callbacks=[Interrupt()])
    with pytest.warns(UserWarning, match=r"trained on past its model.keras \(epoch 3 of 4"):
        Segmenter.load(out)
    Segmenter.from_plan(plan).fit(cases, None, epochs=4, out=out)    # finished: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Segmenter.load(out)


def test_train_and_predict_refuse_writing_into_their_input_folder(tmp_path):
    from miscnn_lite.io import SettingsError
    from miscnn_lite.training import prediction_items, train_command
    for i in range(2):
        save_case(toy_case(i), tmp_path / "data")
    with pytest.raises(SettingsError, match="--out .* is the --data folder"):
        train_command(tmp_path / "data", tmp_path / "data", epochs=1)
    with pytest.raises(SettingsError, match="--out .* is the --input folder"):
        prediction_items(tmp_path / "data", tmp_path / "data" / ".")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["toy_000", "toy_001"]   # nothing written


def test_a_save_cut_short_leaves_a_folder_that_loads(tmp_path, monkeypatch):
    "Each file's checksum is written once it is in place: Ctrl-C while the model is written leaves a loadable folder."
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), seed=0)
    seg.save(tmp_path / "m")
    seg.settings["overlap"] = 0.25

    def cut_short(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(seg.model, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        seg.save(tmp_path / "m")
    again = Segmenter.load(tmp_path / "m")                # the new config.json, the earlier model.keras
    assert again.settings["overlap"] == 0.25
    assert sorted(json.loads((tmp_path / "m" / "checksums.json").read_text())) == ["config.json", "model.keras"]


def test_prediction_mirror_axes_and_class_names_are_checked():
    from miscnn_lite.io import MiscnnError
    from miscnn_lite.models import unet
    from miscnn_lite.training import Segmenter
    with pytest.raises(MiscnnError, match=r"class_names='abc': give a list of names, one per class"):
        Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), class_names="abc")
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), class_names=["bg", "kidney", "tumor"])
    with pytest.raises(MiscnnError, match="mirror_axes: 2 must be a list of distinct spatial axes"):
        seg.predict_probabilities(toy_case(0, shape=(16, 24, 24)), mirror_axes=2)
