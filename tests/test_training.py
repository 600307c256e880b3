"""Engine: resume after a real SIGKILL, predict to NIfTI in the original orientation, safe loading."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from miscnn_lite.io import affine_from_spacing, load_nifti, save_case, save_nifti
from miscnn_lite.loading import _toy_case

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(target_spacing=None, hu_window=[-100, 400], augmentation=False)
ARGS = dict(epochs=4, iterations=4, batch_size=2, patch_shape=[16, 16, 16], base_filters=4, depth=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for s in range(4):
        save_case(_toy_case(s, tumor=s != 3), root)
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
    opt = np.load(out / "checkpoint" / s["optimizer"])
    assert int(opt["v0000"]) == 4 * ARGS["iterations"]           # Adam's step counter went on from the checkpoint
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
    case = _toy_case(7)
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
    log = seg.fit([_toy_case(s) for s in range(2)], [_toy_case(5)], epochs=2, out=tmp_path / "m")
    assert log["epoch"].tolist() == [1, 2] and np.isfinite(log["loss"]).all()
    if option == "mixed_bfloat16":
        assert seg.model.layers[1].dtype_policy.name == "mixed_bfloat16"
        assert seg.model.outputs[0].dtype == "float32"
    else:
        assert seg.strategy.num_replicas_in_sync == 1
    case = _toy_case(9)
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
    case = _toy_case(4)
    written = seg.predict([case], out=tmp_path, progress=False)
    pred, affine = load_nifti(written[0])
    assert written[0].name == f"{case.id}.nii.gz"
    assert pred.shape == case.shape
    np.testing.assert_allclose(affine, case.original_affine)
