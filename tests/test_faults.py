"""Fault suite: bad inputs and damaged files a hostile but realistic user meets, run against the CLI
(in process, `miscnn_lite.cli.main`) and the API.

Each CLI fault asserts the exit code, that the one-line error names the file or parameter, that no
traceback reaches the user, and that nothing in the output folder was lost or half-written. One
tiny phantom dataset and one tiny trained model (2 epochs) are shared by the module; almost every
fault is refused before any training. Ends with a seeded fuzz test of the NIfTI reader.
"""
import gzip
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from miscnn_lite.cli import main
from miscnn_lite.io import LOCK_FILE, MiscnnError, load_case, load_nifti, save_nifti

TINY = ["--epochs", "2", "--iterations", "2", "--batch-size", "2", "--patch-shape", "16", "32", "32",
        "--base-filters", "4", "--depth", "2"]
CONFIG = "target_spacing: null\naugmentation: false\nworkers: 1\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A 3-case phantom dataset, a config file, and a model trained for 2 epochs on it."
    from miscnn_lite.phantoms import make_phantom_dataset
    root = tmp_path_factory.mktemp("faults")
    data = make_phantom_dataset(root / "data", n_cases=3, seed=0, shape=(24, 48, 48),
                                spacing=(2.5, 1.5, 1.5), progress=False)
    (root / "config.yaml").write_text(CONFIG)
    code = main(["train", "--data", str(data), "--out", str(root / "model"), "--config", str(root / "config.yaml"),
                 *TINY])
    assert code == 0
    return dict(root=root, data=data, config=root / "config.yaml", model=root / "model")


def snapshot(folder) -> dict:
    "{relative path: sha256} of every file under `folder` (empty if it does not exist)."
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(capsys, *argv) -> tuple[int, str]:
    "Run the CLI in process; returns (exit code, stderr)."
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:                     # argparse rejects the command line itself
        code = e.code
    err = capsys.readouterr().err
    return code, err


def copy_data(world, tmp_path) -> Path:
    return Path(shutil.copytree(world["data"], tmp_path / "data"))


def copy_model(world, tmp_path) -> Path:
    return Path(shutil.copytree(world["model"], tmp_path / "model", ignore=shutil.ignore_patterns("cache")))


def _edit_label(path, edit):
    arr, aff = load_nifti(path)
    save_nifti(path, edit(arr.copy()), aff)


def _edit_affine(path, edit):
    arr, aff = load_nifti(path)
    save_nifti(path, arr, edit(aff.copy()))


def _edit_both_affines(case_dir, edit):
    for name in ("imaging.nii.gz", "segmentation.nii.gz"):
        _edit_affine(case_dir / name, edit)


def _scale(factor):
    def edit(aff):
        aff[:3, :] *= factor
        return aff
    return edit


# ---------------------------------------------------------------- data faults: `train` refuses before training
def _label_3_late(d):
    _edit_label(d / "case_00002" / "segmentation.nii.gz", lambda s: np.where(s == 2, 3, s).astype(s.dtype)
                if (s == 2).any() else np.where(s == 1, 3, s).astype(s.dtype))
    return "case_00002"

def _label_3_first(d):
    _edit_label(d / "case_00000" / "segmentation.nii.gz", lambda s: np.where(s == 1, 7, s).astype(s.dtype))
    return "case_00000"

def _float_label(d):
    _edit_label(d / "case_00001" / "segmentation.nii.gz", lambda s: s.astype(np.float32) * 0.5)
    return "case_00001"

def _negative_label(d):
    _edit_label(d / "case_00001" / "segmentation.nii.gz", lambda s: np.where(s == 1, -1, s).astype(np.int16))
    return "case_00001"

def _label_shape(d):
    _edit_label(d / "case_00001" / "segmentation.nii.gz", lambda s: s[:-2])
    return "case_00001"

def _label_affine(d):
    def move(a):
        a[:3, 3] += 5.0                                   # 5 mm off the image
        return a
    _edit_affine(d / "case_00001" / "segmentation.nii.gz", move)
    return "case_00001"

def _metres(d):
    _edit_both_affines(d / "case_00002", _scale(0.001))
    return "metres"

def _micrometres(d):
    _edit_both_affines(d / "case_00001", _scale(1000))
    return "case_00001"

def _slices_50mm(d):
    def stretch(a):
        a[:3, 0] *= 20                                    # 2.5 mm slices become 50 mm
        return a
    _edit_both_affines(d / "case_00001", stretch)
    return "case_00001"

def _no_segmentation(d):
    (d / "case_00001" / "segmentation.nii.gz").unlink()
    return "case_00001"

def _nan_image(d):
    p = d / "case_00002" / "imaging.nii.gz"
    arr, aff = load_nifti(p)
    arr = arr.astype(np.float32); arr[3, 4, 5] = np.nan
    save_nifti(p, arr, aff)
    return "case_00002"

def _truncated_image(d):
    p = d / "case_00001" / "imaging.nii.gz"
    p.write_bytes(p.read_bytes()[:400])
    return "case_00001"

def _garbage_image(d):
    (d / "case_00001" / "imaging.nii.gz").write_bytes(b"this is not a NIfTI file" * 50)
    return "case_00001"

def _empty_label(d):
    (d / "case_00000" / "segmentation.nii.gz").write_bytes(b"")
    return "case_00000"

def _four_d(d):
    p = d / "case_00001" / "imaging.nii.gz"
    arr, aff = load_nifti(p)
    nib.save(nib.Nifti1Image(np.stack([arr, arr], -1), aff), p)
    return "case_00001"

def _bad_case_name(d):
    (d / "case_00001").rename(d / "case 00001")
    return "case 00001"

def _duplicate_case(d):
    img = d / "case_00000" / "imaging.nii.gz"
    shutil.copy(img, d / "case_00000" / "imaging.nii")
    return "case_00000"


DATA_FAULTS = {f.__name__[1:]: f for f in [
    _label_3_late, _label_3_first, _float_label, _negative_label, _label_shape, _label_affine, _metres,
    _micrometres, _slices_50mm, _no_segmentation, _nan_image, _truncated_image, _garbage_image, _empty_label,
    _four_d, _bad_case_name, _duplicate_case]}


@pytest.mark.parametrize("fault", sorted(DATA_FAULTS))
def test_train_refuses_bad_data(world, tmp_path, capsys, fault):
    data = copy_data(world, tmp_path)
    token = DATA_FAULTS[fault](data)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, err = cli(capsys, "train", "--data", data, "--out", out, "--config", world["config"], *TINY)
    assert code == 2, err
    assert token in err and "Traceback" not in err and len(err) < 3000, err
    assert not (out / "train_settings.json").exists() and not (out / "checkpoint").exists()
    assert not [p for p in out.rglob(".*") if p.is_file()] if out.exists() else True


# ---------------------------------------------------------------- settings faults: refused, nothing written
SETTINGS_FAULTS = {
    "epochs_0": (["--epochs", "0"], "epochs=0"),
    "epochs_negative": (["--epochs", "-1"], "epochs=-1"),
    "batch_size_0": (["--batch-size", "0"], "batch_size=0"),
    "iterations_0": (["--iterations", "0"], "iterations=0"),
    "loss_typo": (["--loss", "dicee"], "loss='dicee'"),
    "patch_not_divisible": (["--patch-shape", "10", "32", "32"], "2**depth"),
    "base_filters_0": (["--base-filters", "0"], "base_filters=0"),
    "depth_0": (["--depth", "0"], "depth=0"),
    "model_unknown": (["--model", "resnet"], "model='resnet'"),
    "epochs_not_int": (["--epochs", "ten"], "--epochs"),
    "resume_and_overwrite": (["--resume", "--overwrite"], "--resume --overwrite"),
    "resume_without_run": (["--resume"], "no saved run"),
}
CONFIG_FAULTS = {
    "val_fraction_1.5": ("val_fraction: 1.5\n", "val_fraction=1.5"),
    "unknown_key": ("epochz: 3\n", "epochz"),
    "malformed_yaml": ("epochs: [3\n", "config.yaml: line"),
    "not_a_mapping": ("- 1\n- 2\n", "config.yaml"),
    "hu_window_reversed": ("hu_window: [300, -79]\n", "hu_window"),
    "learning_rate_negative": ("learning_rate: -0.1\n", "learning_rate"),
    "spacing_range_reversed": ("spacing_range: [20, 0.05]\n", "spacing_range"),
    "target_spacing_zero": ("target_spacing: [0, 1, 1]\n", "target_spacing"),
    "binary_file": (b"\xff\xfe\x00garbage", "config.yaml"),
}


@pytest.mark.parametrize("fault", sorted(SETTINGS_FAULTS))
def test_train_refuses_bad_option(world, tmp_path, capsys, fault):
    argv, token = SETTINGS_FAULTS[fault]
    out = tmp_path / "out"
    code, err = cli(capsys, "train", "--data", world["data"], "--out", out, "--config", world["config"], *TINY, *argv)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("fault", sorted(CONFIG_FAULTS))
def test_train_refuses_bad_config(world, tmp_path, capsys, fault):
    text, token = CONFIG_FAULTS[fault]
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else (CONFIG + text).encode())
    out = tmp_path / "out"
    code, err = cli(capsys, "train", "--data", world["data"], "--out", out, "--config", cfg, *TINY)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert not out.exists()


def test_missing_config_file(world, tmp_path, capsys):
    code, err = cli(capsys, "train", "--data", world["data"], "--out", tmp_path / "out", "--config",
                    tmp_path / "none.yaml")
    assert code == 2 and "none.yaml" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["data_is_file", "data_missing", "data_empty", "out_is_file"])
def test_train_refuses_bad_paths(world, tmp_path, capsys, fault):
    data, out = world["data"], tmp_path / "out"
    if fault == "data_is_file":
        data = world["data"] / "case_00000" / "imaging.nii.gz"
    elif fault == "data_missing":
        data = tmp_path / "nowhere"
    elif fault == "data_empty":
        data = tmp_path / "empty"; data.mkdir()
    else:
        out.write_text("keep me")
    code, err = cli(capsys, "train", "--data", data, "--out", out, "--config", world["config"], *TINY)
    assert code == 2 and (str(data) in err or str(out) in err) and "Traceback" not in err, err
    assert out.read_text() == "keep me" if fault == "out_is_file" else not out.exists()


# ---------------------------------------------------------------- an existing run is never silently changed
@pytest.mark.parametrize("fault", ["other_base_filters", "other_loss", "locked", "settings_corrupt", "resume_other",
                                   "other_data"])
def test_existing_run_is_protected(world, tmp_path, capsys, fault):
    model = copy_model(world, tmp_path)
    argv, token, data = list(TINY), None, world["data"]
    if fault == "other_base_filters":
        argv[argv.index("--base-filters") + 1], token = "8", "base_filters: saved 4, now 8"
    elif fault == "other_loss":
        argv, token = argv + ["--loss", "cross_entropy"], "loss: saved 'dice_ce', now 'cross_entropy'"
    elif fault == "locked":
        (model / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                   "command": "miscnn-lite train", "started": "now"}))
        token = f"pid {os.getpid()}"
    elif fault == "settings_corrupt":
        (model / "train_settings.json").write_text('{"epochs": 2, "base_')
        token = "train_settings.json"
    elif fault == "other_data":                       # the same case ids, other phantoms: not the dataset of the run
        from miscnn_lite.phantoms import make_phantom_dataset
        data = make_phantom_dataset(tmp_path / "data2", n_cases=3, seed=1, shape=(24, 48, 48), spacing=(2.5, 1.5, 1.5),
                                    progress=False)
        argv, token = argv + ["--epochs", "3"], f"{data} is another dataset (cases differ: case_00000"
    else:
        argv, token = argv + ["--resume", "--depth", "3", "--patch-shape", "16", "32", "32"], "depth: saved 2, now 3"
    before = snapshot(model)
    code, err = cli(capsys, "train", "--data", data, "--out", model, "--config", world["config"], *argv)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert snapshot(model) == before


@pytest.mark.parametrize("fault", ["log_garbage", "pipeline_damaged"])
def test_resume_refuses_damaged_run_files(world, tmp_path, capsys, fault):
    model = copy_model(world, tmp_path)
    if fault == "log_garbage":
        (model / "training_log.tsv").write_bytes(b"\x00\x01 not a log")
        token = "training_log.tsv"
    else:
        (model / "pipeline.json").write_text((model / "pipeline.json").read_text()[:-40])
        token = "pipeline.json"
    before = snapshot(model)
    code, err = cli(capsys, "train", "--data", world["data"], "--out", model, "--config", world["config"], *TINY)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert {k: v for k, v in snapshot(model).items() if not k.startswith("cache")} == \
           {k: v for k, v in before.items() if not k.startswith("cache")}


# ---------------------------------------------------------------- predict
def _flip_model(m):
    b = bytearray((m / "model.keras").read_bytes())
    b[len(b) // 2] ^= 0xFF
    (m / "model.keras").write_bytes(bytes(b))
def _cut_model(m): (m / "model.keras").write_bytes((m / "model.keras").read_bytes()[:5000])
def _edit_config(m):
    text = (m / "config.json").read_text()
    assert '"overlap": 0.5' in text
    (m / "config.json").write_text(text.replace('"overlap": 0.5', '"overlap": 0.25'))
def _cut_config(m): (m / "config.json").write_text('{"patch_')
def _no_pipeline(m): (m / "pipeline.json").unlink()
def _no_model(m): (m / "model.keras").unlink()

PREDICT_MODEL_FAULTS = {"model_bit_flip": (_flip_model, "model.keras"), "model_truncated": (_cut_model, "model.keras"),
                        "config_edited": (_edit_config, "config.json"), "config_truncated": (_cut_config,
                                                                                             "config.json"),
                        "pipeline_missing": (_no_pipeline, "pipeline.json"), "model_missing": (_no_model,
                                                                                               "model.keras")}


@pytest.mark.parametrize("fault", sorted(PREDICT_MODEL_FAULTS))
def test_predict_refuses_damaged_model(world, tmp_path, capsys, fault):
    model = copy_model(world, tmp_path)
    damage, token = PREDICT_MODEL_FAULTS[fault]
    damage(model)
    out = tmp_path / "pred"
    code, err = cli(capsys, "predict", "--model", model, "--input", world["data"] / "case_00000", "--out", out)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("fault", ["input_missing", "input_without_images", "out_is_file", "out_locked", "pictures"])
def test_predict_refuses_bad_paths(world, tmp_path, capsys, fault):
    inp, out = world["data"] / "case_00000", tmp_path / "pred"
    if fault == "pictures":                            # the world's model was trained on 3D volumes
        from miscnn_lite.phantoms import make_picture_dataset
        inp = make_picture_dataset(tmp_path / "pics", n_cases=1, shape=(8, 48, 48))
    elif fault == "input_missing":
        inp = tmp_path / "nothing"
    elif fault == "input_without_images":
        inp = tmp_path / "txt"; inp.mkdir(); (inp / "notes.txt").write_text("x")
    elif fault == "out_is_file":
        out.write_text("keep me")
    else:
        out.mkdir(); (out / "keep.nii.gz").write_bytes(b"old")
        (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "command": "x"}))
    before = snapshot(out) if out.is_dir() else None
    code, err = cli(capsys, "predict", "--model", world["model"], "--input", inp, "--out", out)
    assert code == 2 and (str(inp) in err or str(out) in err or fault == "pictures") and "Traceback" not in err, err
    if fault == "pictures":
        assert "trained on 3D CT volumes, but the input holds pictures" in err and not out.exists(), err
    if fault == "out_is_file":
        assert out.read_text() == "keep me"
    elif before is not None:
        assert snapshot(out) == before


def test_predict_cleans_temporaries_of_a_killed_run(world, tmp_path, capsys):
    out = tmp_path / "pred"
    (out / "case_00000").mkdir(parents=True)
    stale = out / "case_00000" / ".prediction.k1ll.tmp.nii.gz"
    stale.write_bytes(b"")
    code, err = cli(capsys, "predict", "--model", world["model"], "--input", world["data"] / "case_00000", "--out", out)
    assert code == 0, err
    assert not stale.exists() and (out / "case_00000" / "prediction.nii.gz").is_file()
    assert not (out / LOCK_FILE).exists()


# ---------------------------------------------------------------- evaluate
def _shift(a): a[:3, 3] += (0, 100, 0); return a
def _double(a): a[:3, :3] *= 2; return a
def _flip(a): a[:3, 0] *= -1; return a


@pytest.mark.parametrize("fault", ["origin_100mm", "spacing_doubled", "direction_flipped", "shape_differs",
                                   "prediction_truncated", "reference_missing", "labels_not_int"])
def test_evaluate_refuses(world, tmp_path, capsys, fault):
    ref = world["data"] / "case_00000" / "segmentation.nii.gz"
    pred = tmp_path / "pred.nii.gz"
    arr, aff = load_nifti(ref)
    extra, token = [], "pred.nii.gz"
    if fault in ("origin_100mm", "spacing_doubled", "direction_flipped"):
        save_nifti(pred, arr, {"origin_100mm": _shift, "spacing_doubled": _double,
                               "direction_flipped": _flip}[fault](aff.copy()))
    elif fault == "shape_differs":
        save_nifti(pred, arr[:-1], aff)
    elif fault == "prediction_truncated":
        save_nifti(pred, arr, aff); pred.write_bytes(pred.read_bytes()[:300])
    elif fault == "reference_missing":
        save_nifti(pred, arr, aff); ref, token = tmp_path / "none.nii.gz", "none.nii.gz"
    else:
        save_nifti(pred, arr, aff); extra, token = ["--labels", "1,x"], "--labels"
    out = tmp_path / "metrics.csv"
    code, err = cli(capsys, "evaluate", "--reference", ref, "--prediction", pred, "--out", out, *extra)
    assert code == 2 and token in err and "Traceback" not in err, err
    assert not out.exists()


def test_evaluate_resample_accepts_a_moved_grid(world, tmp_path, capsys):
    ref = world["data"] / "case_00000" / "segmentation.nii.gz"
    arr, aff = load_nifti(ref)
    save_nifti(tmp_path / "pred.nii.gz", arr, _shift(aff.copy()))
    code, err = cli(capsys, "evaluate", "--reference", ref, "--prediction", tmp_path / "pred.nii.gz",
                    "--out", tmp_path / "m.csv", "--resample", "--metrics", "DICE")
    assert code == 0, err


# ---------------------------------------------------------------- other commands
def test_sweep_with_malformed_yaml(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"; grid.write_text("notebook: x.ipynb\ngrid: {a: [1, 2\n")
    code, err = cli(capsys, "sweep", grid, "--out", tmp_path / "sweep")
    assert code == 2 and "grid.yaml" in err and "Traceback" not in err, err


def test_info_on_a_damaged_file(tmp_path, capsys):
    p = tmp_path / "x.nii.gz"; p.write_bytes(gzip.compress(b"\x00" * 100))
    code, err = cli(capsys, "info", p)
    assert code == 2 and "x.nii.gz" in err and "Traceback" not in err, err


def test_stray_files_are_ignored_and_listed(world, tmp_path, capsys):
    from miscnn_lite.io import open_dataset
    data = copy_data(world, tmp_path)
    (data / "case_00000" / "imaging.nii.gz.bak").write_bytes(b"old")
    with pytest.warns(UserWarning, match=r"imaging\.nii\.gz\.bak"):
        assert open_dataset(data).case_ids == ["case_00000", "case_00001", "case_00002"]


# ---------------------------------------------------------------- caches and checkpoints (API)
def test_damaged_cache_entries_are_rebuilt(world, tmp_path):
    from miscnn_lite.io import open_dataset
    from miscnn_lite.loading import PreprocessedCache
    reader = open_dataset(world["data"])
    cache = PreprocessedCache(tmp_path / "cache")
    entries = cache.prepare(reader)
    entries[0].locations_path.write_bytes(b"garbage")                   # BadZipFile before
    data = np.load(entries[1].image_path, mmap_mode="r+")              # same size and header, other data
    data[:] = -7 if data.dtype.kind in "iu" else np.nan; data.flush(); del data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = PreprocessedCache(tmp_path / "cache")
        fresh = again.prepare(reader)
    assert again.stats["corrupt"] == 2, [str(w.message) for w in caught]
    assert (np.asarray(fresh[1].image()) == reader.load_case("case_00001").image).all() and fresh[0].class_locations()


@pytest.mark.parametrize("damage", ["state_json", "weights"])
def test_damaged_checkpoint_is_detected(world, tmp_path, damage):
    from miscnn_lite.training import CHECKPOINT_DIR, checkpoint_problem, checkpoint_states
    model = copy_model(world, tmp_path)
    folder = model / CHECKPOINT_DIR
    newest = json.loads((folder / "state.json").read_text())
    target = {"state_json": folder / "state.json", "weights": folder / newest["weights"]}[damage]
    target.write_bytes(target.read_bytes()[: max(10, target.stat().st_size // 2)])
    usable = [s["epoch"] for f, s in checkpoint_states(model) if checkpoint_problem(folder, s) is None]
    assert usable == ([2, 1] if damage == "state_json" else [1])       # falls back, never to a damaged one


def test_api_raises_library_errors(world, tmp_path):
    from miscnn_lite.training import Segmenter, train_command
    with pytest.raises(MiscnnError, match="epochs=0"):
        train_command(world["data"], tmp_path / "m", epochs=0, progress=False)
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        Segmenter.load(tmp_path)


# ---------------------------------------------------------------- NIfTI fuzz
def _mutants(rng, raw: bytes, n: int):
    for i in range(n):
        b = bytearray(raw)
        kind = i % 4
        if kind == 0:                                    # header bytes (dims, datatype, pixdim, offsets, qform)
            for _ in range(rng.integers(1, 6)):
                b[rng.integers(0, 352)] = rng.integers(0, 256)
        elif kind == 1:                                  # anywhere
            for _ in range(rng.integers(1, 20)):
                b[rng.integers(0, len(b))] = rng.integers(0, 256)
        elif kind == 2:                                  # cut short
            b = b[: rng.integers(0, len(b))]
        else:                                            # a header field set to an extreme value
            off = int(rng.choice([40, 42, 44, 46, 70, 72, 76, 80, 84, 108, 252, 254, 280]))
            b[off:off + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\x00\x00\xc0\x7f",
                                         b"\x01\x80\x00\x00"])
        yield kind, bytes(b)


def test_nifti_fuzz(tmp_path):
    rng = np.random.default_rng(19)
    image = rng.integers(-100, 300, (6, 8, 10)).astype(np.int16)
    src = tmp_path / "src.nii"
    save_nifti(src, image, np.diag([2.5, 0.8, 0.8, 1.0]))
    raw = src.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for i, (kind, data) in enumerate(_mutants(rng, raw, 500)):
        name = tmp_path / (f"m{i}.nii.gz" if i % 2 else f"m{i}.nii")
        name.write_bytes(gzip.compress(data) if i % 2 else data)
        try:
            case = load_case(name)
        except MiscnnError as e:
            assert name.name in str(e), (kind, str(e)[:300])
            outcomes["refused"] += 1
        else:
            assert case.image.ndim == 3 and all(s > 0 for s in case.spacing)
            outcomes["loaded"] += 1
        name.unlink()
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 20, outcomes


@pytest.mark.parametrize("command", ["cv", "experiment", "sweep"])
def test_locked_results_folder(world, tmp_path, capsys, command):
    out = tmp_path / "results"; out.mkdir(); (out / "result.json").write_text("{}")
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                             "command": "miscnn-lite cv", "started": "earlier"}))
    before = snapshot(out)
    first = [tmp_path / "grid.yaml"] if command == "sweep" else ["--data", world["data"]]
    code, err = cli(capsys, command, *first, "--out", out)
    assert code == 2 and f"pid {os.getpid()}" in err and str(out) in err, err
    assert snapshot(out) == before


# ---------------------------------------------------------------- errors that are not the kit's own
def test_failed_experiment_notebook_is_one_line(world, tmp_path, capsys):
    "n_folds=5 on a 3-case dataset: the notebook's fold cell fails; the user sees one line that names n_folds."
    out = tmp_path / "cv"
    code, err = cli(capsys, "cv", "--data", world["data"], "--out", out, "-p", "n_folds=5")
    assert code == 2 and "n_folds" in err and "unexpected" not in err and "Traceback" not in err, err
    assert (out / "kits19_cv.failed.ipynb").is_file() and not (out / "kits19_cv.ipynb").exists()


@pytest.mark.parametrize("command", ["cv", "experiment"])
def test_malformed_preset_leaves_no_results_folder(world, tmp_path, capsys, command):
    preset = tmp_path / "preset.yaml"; preset.write_text("n_folds: [3\nepochs: 2\n")
    out = tmp_path / "results"
    code, err = cli(capsys, command, "-f", preset, "--data", world["data"], "--out", out)
    assert code == 2 and "preset.yaml" in err and "Traceback" not in err, err
    assert not out.exists()


def test_dependency_error_is_one_line_without_traceback(world, tmp_path, capsys, monkeypatch):
    import miscnn_lite.io as io
    monkeypatch.setattr(io, "describe", lambda path: (_ for _ in ()).throw(RuntimeError("x" * 20000)))
    code, err = cli(capsys, "info", world["data"])
    assert code == 1 and "unexpected RuntimeError" in err and "MISCNN_DEBUG" in err and len(err) < 3000, err
