"""Fold-model ensembles: the ensemble's probabilities are the mean of its members'."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from miscnn_lite.io import MiscnnError, load_nifti, load_prediction
from miscnn_lite.models import unet
from miscnn_lite.phantoms import toy_case
from miscnn_lite.training import Segmenter
from miscnn_lite.validation import (
    ensemble_predict,
    fold_model_dirs,
    member_probabilities,
    member_variance,
    predictive_entropy,
)


def test_ensemble_is_mean_of_member_probabilities(tmp_path):
    members = []
    for k in range(2):
        seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2, seed=k)
        seg.save(tmp_path / f"fold_{k}" / "model")
        members.append(seg)
    case = toy_case(3, shape=(16, 24, 24))
    p0, p1 = members[0].predict_probabilities(case), members[1].predict_probabilities(case)
    assert not np.allclose(p0, p1)                       # two different members (seeded initial weights)
    expected = np.argmax((p0 + p1) / 2, -1)
    dirs = fold_model_dirs(tmp_path)
    assert [d.parent.name for d in dirs] == ["fold_0", "fold_1"]
    (label_map,) = ensemble_predict(dirs, [case])
    np.testing.assert_array_equal(label_map, expected)
    (one,) = ensemble_predict(str(dirs[0]), [case])                 # one folder as a str: a one-model ensemble
    np.testing.assert_array_equal(one, np.argmax(p0, -1))
    (path,) = ensemble_predict(dirs, [case], out=tmp_path / "pred")
    array, affine = load_nifti(path)
    np.testing.assert_array_equal(array, expected)
    from miscnn_lite.evaluation import keep_largest_components
    largest = lambda label_map, case: keep_largest_components(label_map, labels={"foreground": (1, 2)})
    (post,) = ensemble_predict(dirs, [case], postprocess=largest)
    np.testing.assert_array_equal(post, keep_largest_components(expected, labels={"foreground": (1, 2)}))
    with pytest.raises(FileNotFoundError, match="no fold_K/model"):
        fold_model_dirs(tmp_path / "pred")
    from miscnn_lite.io import save_nifti
    image = tmp_path / "flat" / f"{case.id}.nii.gz"          # an image whose prediction would be itself
    save_nifti(image, case.image, case.affine)
    before = image.read_bytes()
    with pytest.raises(MiscnnError, match="is an input file; predicting into it would overwrite it"):
        ensemble_predict(dirs, [image], out=tmp_path / "flat")
    assert image.read_bytes() == before
    save_nifti(tmp_path / "flat" / f"{case.id}.nii", case.image, case.affine)
    with pytest.raises(MiscnnError, match="would both be predicted into"):
        ensemble_predict(dirs, [image, tmp_path / "flat" / f"{case.id}.nii"], out=tmp_path / "other")
    assert not (tmp_path / "other").exists()
    with pytest.raises(MiscnnError, match="no cases to predict"):
        ensemble_predict(dirs, [], out=tmp_path / "other")


def test_ensemble_uncertainty_maps(tmp_path):
    "Entropy of the mean probabilities and member variance, returned and written on the case's own grid."
    dirs = []
    for k in range(2):
        seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2, seed=k)
        seg.save(tmp_path / f"fold_{k}" / "model")
        dirs.append(tmp_path / f"fold_{k}" / "model")
    case = toy_case(4, shape=(16, 24, 24))
    members = [Segmenter.load(d).predict_probabilities(case) for d in dirs]
    ((label_map, entropy, variance),) = ensemble_predict(dirs, [case], uncertainty=True)
    np.testing.assert_allclose(entropy, predictive_entropy((members[0] + members[1]) / 2), atol=1e-6)
    np.testing.assert_allclose(variance, member_variance(members), atol=1e-7)
    assert entropy.shape == variance.shape == case.shape and variance.max() > 0
    ((_, same_entropy, same_variance),) = ensemble_predict([dirs[0], dirs[0]], [case], uncertainty=True)
    assert not same_variance.any()                                   # identical members never disagree
    np.testing.assert_allclose(same_entropy, predictive_entropy(members[0]), atol=1e-6)
    ((_, _, single),) = ensemble_predict(dirs[:1], [case], uncertainty=True)
    assert single is None                                            # one model: entropy only
    (path,) = ensemble_predict(dirs, [case], out=tmp_path / "pred", uncertainty=True)
    written, _ = load_nifti(tmp_path / "pred" / f"{case.id}_entropy.nii.gz")
    assert written.dtype == np.float32
    np.testing.assert_allclose(load_prediction(tmp_path / "pred" / f"{case.id}_variance.nii.gz", case), variance,
                               atol=1e-7)


def test_mirror_members(tmp_path):
    """Each mirroring is a member. On an image symmetric in x (and a patch grid symmetric in x), the x-flipped
    member is the plain one mirrored; the plain member is the model without its saved mirroring."""
    from dataclasses import replace
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2, seed=0,
                    mirror_axes=(0, 1, 2))
    case = toy_case(5, shape=(16, 24, 24))
    sym = replace(case, image=(case.image + np.flip(case.image, 2)) / 2, label=None)
    plain, mirrored = member_probabilities(seg, sym, (2,))
    np.testing.assert_allclose(plain, seg.predict_probabilities(sym, mirror_axes=()), atol=1e-6)
    np.testing.assert_allclose(mirrored, np.flip(plain, 2), atol=1e-5)
    assert not np.allclose(plain, np.flip(plain, 2), atol=1e-3)      # the model itself is not symmetric
    assert len(member_probabilities(seg, case, (0, 2))) == 4
    (saved,) = member_probabilities(seg, case)                       # as saved: its own 8-fold mirroring
    np.testing.assert_allclose(saved, seg.predict_probabilities(case), atol=1e-6)
    with pytest.raises(ValueError, match="mirror_axes"):
        member_probabilities(seg, case, (3,))


def test_one_model_with_mirrors_gives_variance_and_predict_layout(tmp_path):
    "One model × 2 mirrorings: two members, so a variance map; `path_of` puts the maps beside the prediction."
    from miscnn_lite.io import save_case
    from miscnn_lite.training import prediction_path
    seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2, seed=1)
    seg.save(tmp_path / "model")
    case = toy_case(6, shape=(16, 24, 24))
    save_case(case, tmp_path / "data")
    members = member_probabilities(seg, case, (1,))
    ((label_map, entropy, variance),) = ensemble_predict([tmp_path / "model"], [case], uncertainty=True,
                                                         mirror_axes=(1,))
    np.testing.assert_array_equal(label_map, np.argmax((members[0] + members[1]) / 2, -1))
    np.testing.assert_allclose(variance, member_variance(members), atol=1e-7)
    folder = tmp_path / "data" / case.id
    (path,) = ensemble_predict([tmp_path / "model"], [folder], out=tmp_path / "pred", uncertainty=True,
                               mirror_axes=(1,), path_of=prediction_path)
    assert path == tmp_path / "pred" / case.id / "prediction.nii.gz"
    assert sorted(p.name for p in path.parent.iterdir()) == ["prediction.nii.gz", "prediction_entropy.nii.gz",
                                                             "prediction_variance.nii.gz"]
    np.testing.assert_allclose(load_nifti(path.parent / "prediction_entropy.nii.gz")[0], entropy, atol=1e-6)


def test_cross_validate_refuses_an_earlier_runs_fold_folders(tmp_path):
    "Scores and models left by another split or another plan are never reported as this run's."
    import dataclasses

    import pandas as pd

    from miscnn_lite.io import MiscnnError, save_case
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.validation import cross_validate, kfold

    for i in range(4):
        save_case(dataclasses.replace(toy_case(i, shape=(16, 24, 24)), id=f"c{i}"), tmp_path / "data")
    ids = [f"c{i}" for i in range(4)]
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(epochs=1, iterations=1, batch_size=2))
    folds = kfold(ids, 2, seed=0)
    other = kfold(ids, 2, seed=5)
    assert other[0].val != folds[0].val
    (tmp_path / "run" / "fold_0").mkdir(parents=True)
    pd.DataFrame({"case": other[0].val, "label": "kidney", "metric": "DICE", "value": 0.9}).to_csv(
        tmp_path / "run" / "fold_0" / "metrics.csv", index=False)
    make = lambda k: Segmenter.from_plan(plan.replace(seed=k))   # noqa: E731
    with pytest.raises(MiscnnError, match="holds another split's results"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1)
    (tmp_path / "run" / "fold_0" / "metrics.csv").unlink()
    plan.replace(schedule=dict(epochs=3, iterations=1, batch_size=2)).save(tmp_path / "run" / "fold_0" / "model" /
                                                                             "plan.json")
    with pytest.raises(MiscnnError, match="trained with another plan \\(differs in schedule\\)"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1)


def test_ensemble_of_models_with_other_classes_is_refused(tmp_path):
    from miscnn_lite.io import MiscnnError
    for k, n in enumerate((3, 2)):
        Segmenter(unet(n, depth=2, base_filters=4), patch_shape=(16, 16, 16), seed=k).save(tmp_path / f"m{k}")
    with pytest.raises(MiscnnError, match="different numbers of classes"):
        ensemble_predict([tmp_path / "m0", tmp_path / "m1"], [toy_case(0, shape=(16, 24, 24))])
    for k, names in enumerate((["background", "kidney", "tumor"], ["background", "tumor", "kidney"])):
        seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), class_names=names)
        seg.save(tmp_path / f"n{k}")
    with pytest.raises(MiscnnError, match="name their classes differently"):
        ensemble_predict([tmp_path / "n0", tmp_path / "n1"], [toy_case(0, shape=(16, 24, 24))])
    from miscnn_lite.preprocessing import LabelRemap, Pipeline
    for k, mapping in enumerate(({0: 0, 1: 1, 2: 1}, {0: 0, 1: 0, 2: 1})):   # kidney+tumor vs tumor, both 2 classes
        seg = Segmenter(unet(2, depth=2, base_filters=4), patch_shape=(16, 16, 16),
                        pipeline=Pipeline([LabelRemap(mapping)]))
        seg.save(tmp_path / f"r{k}")
    with pytest.raises(MiscnnError, match=r"map the dataset's labels to their classes differently \(LabelRemap"):
        ensemble_predict([tmp_path / "r0", tmp_path / "r1"], [toy_case(0, shape=(16, 24, 24))])
    seg.save(tmp_path / "r2")                                                # the same mapping: accepted
    assert len(ensemble_predict([tmp_path / "r1", tmp_path / "r2"], [toy_case(0, shape=(16, 24, 24))])) == 1
    Segmenter(unet(2, depth=2, base_filters=4), patch_shape=(16, 16, 16),
              pipeline=Pipeline([LabelRemap({0: 0, 1: 1})])).save(tmp_path / "identity")
    Segmenter(unet(2, depth=2, base_filters=4), patch_shape=(16, 16, 16)).save(tmp_path / "none")
    assert len(ensemble_predict([tmp_path / "identity", tmp_path / "none"], [toy_case(0, shape=(16, 24, 24))])) == 1


def test_cross_validate_resumes_only_its_own_split_and_keeps_zero_padded_ids(tmp_path):
    "fold.json records what a fold trained on; a resume with another split is refused; ids like '007' stay ids."
    import dataclasses
    import json

    from miscnn_lite.evaluation import keep_largest_components
    from miscnn_lite.io import MiscnnError, save_case
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.validation import FOLD_FILE, Fold, cross_validate, kfold, load_folds

    ids = [f"{i:03d}" for i in range(4)]
    for i, cid in enumerate(ids):
        save_case(dataclasses.replace(toy_case(i, shape=(16, 24, 24)), id=cid), tmp_path / "data")
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(epochs=1, iterations=1, batch_size=2))
    make = lambda k: Segmenter.from_plan(plan.replace(seed=k))   # noqa: E731
    folds = kfold(ids, 2, seed=0)
    first = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False)
    saved = json.loads((tmp_path / "run" / "fold_0" / FOLD_FILE).read_text())
    assert saved == {"train": folds[0].train, "val": folds[0].val, "epochs": 1,
                     "metrics": ["DICE", "HDRFDST95", "AVGDIST"], "labels": None, "postprocess": None}
    again = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False)  # resumed
    assert sorted(again["case"].unique()) == ids and again["case"].tolist() == first["case"].tolist()
    # scores of another epoch count, metric list or label set are not reused as this run's
    with pytest.raises(MiscnnError, match=r"fold 0 was trained with other settings \(epochs=1 there, 2 now\)"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=2, progress=False)
    with pytest.raises(MiscnnError, match=r"trained and scored with other settings \(metrics=.*give metrics as"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, metrics=("DICE",), progress=False)
    with pytest.raises(MiscnnError, match=r"labels=None there, \{'kidney': \[1\]\} now"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, labels={"kidney": 1},
                       progress=False)
    again = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False,
                           metrics=["dice", "HD95", "ASSD"])              # aliases: the same metrics, not refused
    assert again["value"].tolist() == first["value"].tolist()
    # nor those of another post-processing, another network or other data under the same case ids
    with pytest.raises(MiscnnError, match=r"postprocess=None there, '.*<lambda>' now"):
        cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False,
                       postprocess=lambda m, case: keep_largest_components(m, [1]))
    wider = lambda k: Segmenter.from_plan(plan.replace(seed=k, model_options=dict(depth=2, base_filters=8)))  # noqa: E731
    with pytest.raises(MiscnnError, match="fold 0 of this results folder was made otherwise"):
        cross_validate(tmp_path / "data", folds, wider, tmp_path / "run", epochs=1, progress=False)
    for i, cid in enumerate(ids):                                  # the same ids, other images
        save_case(dataclasses.replace(toy_case(i + 10, shape=(16, 28, 24)), id=cid), tmp_path / "other")
    with pytest.raises(MiscnnError, match="made otherwise.*is another dataset"):
        cross_validate(tmp_path / "other", folds, make, tmp_path / "run", epochs=1, progress=False)
    with pytest.raises(MiscnnError, match=r"fold 0: case id\(s\) \['nope'\] are not in"):
        cross_validate(tmp_path / "data", [Fold(train=["nope"], val=[ids[0]])], make, tmp_path / "new", epochs=1)
    with pytest.raises(MiscnnError, match="folds: no folds given"):
        cross_validate(tmp_path / "data", [], make, tmp_path / "new", epochs=1)
    assert not (tmp_path / "new").exists()
    from miscnn_lite.validation import _fold_cases  # one spelling of equal label regions
    assert (_fold_cases(folds[0], labels={"k": 1})["labels"] == _fold_cases(folds[0], labels={"k": (1,)})["labels"]
            == {"k": [1]})
    assert _fold_cases(folds[0], labels={np.int64(1): np.int64(2)})["labels"] == {"1": [2]}
    for k in range(2):                                   # a folder written before fold.json recorded the scoring
        (tmp_path / "run" / f"fold_{k}" / FOLD_FILE).write_text(json.dumps({"train": folds[k].train,
                                                                            "val": folds[k].val}))
    kept = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False)
    assert kept["value"].tolist() == first["value"].tolist()
    (tmp_path / "run" / "fold_0" / "metrics.csv").unlink()        # fold 0 interrupted, resumed with another split
    other = kfold(ids, 2, seed=5)
    assert other[0].val != folds[0].val
    assert load_folds(tmp_path / "run" / "folds.json") == folds       # cross_validate kept the folds it was given
    with pytest.raises(MiscnnError, match=r"folds.json: holds 2 fold\(s\), 2 given, and fold 0 differs"):
        cross_validate(tmp_path / "data", other, make, tmp_path / "run", epochs=1, progress=False)
    (tmp_path / "run" / "folds.json").unlink()                      # a folder without it: each fold's own record
    with pytest.raises(MiscnnError, match="trained on another split"):
        cross_validate(tmp_path / "data", other, make, tmp_path / "run", epochs=1, progress=False)
    assert not (tmp_path / "run" / "folds.json").exists()        # a refused call writes nothing


def test_prepare_folds_sees_a_changed_val_fraction_and_fold_model_dirs_its_folds(tmp_path):
    from miscnn_lite.io import MiscnnError
    from miscnn_lite.validation import fold_model_dirs, kfold, prepare_folds, save_folds
    ids = [f"c{i}" for i in range(10)]
    assert len(prepare_folds(tmp_path / "split.json", ids, scheme="split")[0].val) == 2
    with pytest.raises(MiscnnError, match="val_fraction: saved 0.2, now 0.5"):
        prepare_folds(tmp_path / "split.json", ids, scheme="split", val_fraction=0.5)
    run = tmp_path / "run"
    save_folds(kfold(ids, 2), run / "folds.json")
    for k in (0, 1, 2):
        (run / f"fold_{k}" / "model").mkdir(parents=True)
    with pytest.raises(MiscnnError, match="fold_2: not one of the 2 folds"):
        fold_model_dirs(run)
    (run / "fold_2" / "model").rename(run / "fold_2" / "gone")
    (run / "fold_old" / "model").mkdir(parents=True)
    with pytest.raises(MiscnnError, match="fold_old: not a fold folder"):
        fold_model_dirs(run)
    (run / "fold_old" / "model").rmdir()
    assert fold_model_dirs(run) == [run / "fold_0" / "model", run / "fold_1" / "model"]


def test_folds_without_recorded_settings_are_counted_and_named(tmp_path):
    "A folds.json saved without its scheme: the fold count is still checked, and the unchecked settings are named."
    import pandas as pd

    from miscnn_lite.io import MiscnnError
    from miscnn_lite.validation import prepare_folds, robust_folds, save_folds
    ids = [f"c{i}" for i in range(9)]
    table = pd.DataFrame(dict(case=ids, slice_thickness=[1, 2, 3, 1, 2, 3, 1, 2, 5]))
    save_folds(robust_folds(table, 3), tmp_path / "folds.json")
    with pytest.raises(MiscnnError, match="n_folds: the file holds 3 folds, now 5"):
        prepare_folds(tmp_path / "folds.json", ids, n_folds=5, scheme="stratified", key="slice_thickness")
    with pytest.warns(UserWarning, match="records no scheme, n_folds, key"):
        assert len(prepare_folds(tmp_path / "folds.json", ids, n_folds=3, scheme="stratified",
                                 key="slice_thickness")) == 3
    with pytest.raises(MiscnnError, match=r"no finite value for 2 case\(s\) \(c0, c3\)"):
        robust_folds(table.assign(slice_thickness=[np.nan, 2, 3, np.nan, 2, 3, 1, 2, 5]), 3)


def test_postprocessing_is_tuned_on_the_folds_of_its_results_only(tmp_path):
    "Folds that are not the results folder's (a subset of its validation cases) are named, not tuned on silently."
    import json

    from miscnn_lite.io import MiscnnError
    from miscnn_lite.phantoms import make_phantom_dataset
    from miscnn_lite.validation import Fold, tune_postprocessing
    data = make_phantom_dataset(tmp_path / "ph", n_cases=3, shape=(8, 32, 32), progress=False)
    (tmp_path / "cv" / "fold_0").mkdir(parents=True)
    (tmp_path / "cv" / "fold_0" / "fold.json").write_text(json.dumps(
        {"train": ["case_00000"], "val": ["case_00001", "case_00002"]}))
    fewer = [Fold(train=["case_00000", "case_00002"], val=["case_00001"])]
    with pytest.raises(MiscnnError, match=r"validated 2 case\(s\), the folds given validate 1"):
        tune_postprocessing(tmp_path / "cv", data, fewer, {"none": lambda m, case: m}, region=2, nested=False)


def background_only(label_map, case):
    "A post-processing that predicts nothing (module level, so its name identifies it on resume)."
    return np.zeros_like(label_map)


def test_a_finished_run_resumes_when_a_validation_case_scores_no_row(tmp_path):
    "With labels=None a case without any label in reference and prediction scores no row; resuming still works."
    import dataclasses

    from miscnn_lite.io import save_case
    from miscnn_lite.plan import TrainingPlan
    from miscnn_lite.validation import Fold, cross_validate

    ids = [f"c{i}" for i in range(4)]
    for i, cid in enumerate(ids):
        case = dataclasses.replace(toy_case(i, shape=(16, 24, 24)), id=cid)
        if cid == "c3":
            case = dataclasses.replace(case, label=np.zeros_like(case.label))      # no foreground at all
        save_case(case, tmp_path / "data")
    plan = TrainingPlan(model_options=dict(depth=2, base_filters=4), patch_shape=[16, 16, 16],
                        schedule=dict(epochs=1, iterations=1, batch_size=2))
    make = lambda k: Segmenter.from_plan(plan.replace(seed=k))   # noqa: E731
    folds = [Fold(["c0", "c1"], ["c2", "c3"]), Fold(["c2", "c3"], ["c0", "c1"])]
    first = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False,
                           postprocess=background_only)
    assert "c3" not in set(first.case)
    again = cross_validate(tmp_path / "data", folds, make, tmp_path / "run", epochs=1, progress=False,
                           postprocess=background_only)
    assert again.case.tolist() == first.case.tolist() and again.value.tolist() == first.value.tolist()


def test_tuning_rescoring_and_manifests_refuse_bad_input_before_writing(tmp_path):
    "An absent region, a string of volumes, no folds, epochs=0 and a damaged manifest: named errors, nothing written."
    from miscnn_lite.io import CorruptFileError, SettingsError, open_dataset, save_prediction
    from miscnn_lite.phantoms import make_phantom_dataset
    from miscnn_lite.validation import (
        Fold,
        cross_validate,
        load_manifest,
        rescore_cross_validation,
        tune_min_volume,
        tune_postprocessing,
    )
    data = make_phantom_dataset(tmp_path / "ph", n_cases=2, shape=(8, 32, 32), progress=False)
    reader = open_dataset(data)
    folds = [Fold(train=["case_00000"], val=["case_00001"]), Fold(train=["case_00001"], val=["case_00000"])]
    for k, fold in enumerate(folds):                     # perfect predictions, saved as cross_validate saves them
        case = reader.load_case(fold.val[0])
        save_prediction(case.label, case, tmp_path / "cv" / f"fold_{k}" / "predictions" / f"{case.id}.nii.gz")
    keep = {"none": lambda m, case: m}
    _, choice = tune_postprocessing(tmp_path / "cv", reader, folds, keep, region=1)
    assert choice == {0: "none", 1: "none", "all": "none"}
    with pytest.raises(MiscnnError, match=r"region 7: label\(s\) \[7\] occur in no reference and no prediction"):
        tune_postprocessing(tmp_path / "cv", reader, folds, keep, region=7)
    with pytest.raises(MiscnnError, match="candidates_mm3 '100': give a list of volumes"):
        tune_min_volume(tmp_path / "cv", reader, folds, region=1, candidates_mm3="100")
    for call in (lambda: tune_postprocessing(tmp_path / "cv", reader, [], keep, region=1, nested=False),
                 lambda: rescore_cross_validation(tmp_path / "cv", reader, [], lambda k: keep["none"])):
        with pytest.raises(MiscnnError, match="folds: no folds given"):
            call()
    with pytest.raises(SettingsError, match="epochs=0: train for a whole number of epochs >= 1"):
        cross_validate(reader, folds, lambda k: None, tmp_path / "new", epochs=0)
    assert not (tmp_path / "new").exists()                # nothing written: a rerun with epochs=1 is not blocked
    (tmp_path / "cv" / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match=r"manifest.json: not a readable manifest"):
        load_manifest(tmp_path / "cv")
