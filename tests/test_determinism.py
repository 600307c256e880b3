"""Same seed, same numbers: a change that breaks determinism on one machine fails here.

- two `Segmenter.fit` runs with one seed give the same weights, bit for bit, whatever used Python's
  global `random` in between (another seed gives other weights: the check can fail);
- a tiny cross-validation run as `miscnn-lite experiment` in one process, and repeated from its
  `manifest.json` in another, gives exactly the same metrics, folds and phantoms.
"""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from miscnn_lite.models import unet
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore
from miscnn_lite.training import Segmenter
from miscnn_lite.validation import load_manifest

EXE = shutil.which("miscnn-lite", path=str(Path(sys.executable).parent))
TINY_CV = dict(n_cases=4, n_folds=2, epochs=1, iterations=3, phantom_shape=[24, 48, 48], patch_shape=[16, 32, 32],
               base_filters=4, depth=2, analysis_mode="3d", batch_size=2, n_test_cases=0, seed=3)


def fit_weights(cases, out, seed, epochs=2):
    random.seed(len(str(out)))                 # whatever ran before must not matter
    random.random()
    seg = Segmenter(unet(3, depth=2, base_filters=4), Pipeline([ClipHU(-79, 304), ZScore("dataset")]),
                    patch_shape=(16, 32, 32), batch_size=2, iterations=3, learning_rate=1e-2, seed=seed)
    log = seg.fit(cases[:2], cases[2:] if epochs > 1 else None, epochs=epochs, out=out)
    return seg.model.get_weights(), log


def test_two_fits_give_the_same_weights(tmp_path):
    cases = [generate_phantom(seed=i, shape=(24, 48, 48)) for i in range(3)]
    first, log_a = fit_weights(cases, tmp_path / "a", seed=4)
    second, log_b = fit_weights(cases, tmp_path / "bb", seed=4)
    other, _ = fit_weights(cases, tmp_path / "c", seed=5, epochs=1)     # other weights from the start
    assert len(first) == len(second) > 10
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(log_a.drop(columns="time_s"),
                                  log_b.drop(columns="time_s"), check_exact=True)
    assert not all(np.array_equal(a, c) for a, c in zip(first, other))


def experiment(out, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([EXE, "experiment", "--out", str(out), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    "Run A from parameters; run B, in another process, from A's manifest (its phantoms made anew)."
    root = tmp_path_factory.mktemp("determinism")
    params = [a for k, v in TINY_CV.items() for a in ("-p", f"{k}={json.dumps(v)}")]
    finish(experiment(root / "a", *params))
    config = {k: v for k, v in load_manifest(root / "a")["config"].items() if k != "data_dir"}
    (root / "repeat.yaml").write_text(yaml.safe_dump(config))
    finish(experiment(root / "b", "-f", root / "repeat.yaml"))
    return root / "a", root / "b"


def test_repeat_from_manifest_gives_the_same_tables_data_folds_and_result(two_runs):
    "One test on the two runs (a module fixture would be built again by each pytest-xdist worker that needs it)."
    for table in ("metrics.csv", "metrics_postprocessed.csv", "summary.csv"):
        a, b = (pd.read_csv(run / table) for run in two_runs)
        assert len(a) > 0, table
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)
    ma, mb = (load_manifest(run) for run in two_runs)
    images = [f for f in ma["data_sha256"] if f.endswith(("imaging.nii.gz", "segmentation.nii.gz"))]
    assert ma["data_sha256"] == mb["data_sha256"] and len(images) == 2 * TINY_CV["n_cases"]
    assert ma["folds"] == mb["folds"]
    assert {k: v for k, v in ma["config"].items() if k != "data_dir"} == \
           {k: v for k, v in mb["config"].items() if k != "data_dir"}
    ra, rb = (json.loads((run / "result.json").read_text()) for run in two_runs)
    for measured in ("minutes", "training_minutes", "load_average_15min"):  # describe the machine, not the run
        assert measured in ra and measured in rb
        ra.pop(measured), rb.pop(measured)
    assert ra == rb and 0 <= ra["kidney_dice"] <= 1
