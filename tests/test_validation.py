"""Fold-model ensembles: the ensemble's probabilities are the mean of its members'."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from miscnn_lite.loading import _toy_case
from miscnn_lite.models import unet
from miscnn_lite.training import Segmenter
from miscnn_lite.validation import ensemble_predict, fold_model_dirs
from miscnn_lite.io import load_nifti


def test_ensemble_is_mean_of_member_probabilities(tmp_path):
    members = []
    for k in range(2):
        keras.utils.set_random_seed(k)
        seg = Segmenter(unet(3, depth=2, base_filters=4), patch_shape=(16, 16, 16), batch_size=2)
        seg.save(tmp_path / f"fold_{k}" / "model")
        members.append(seg)
    case = _toy_case(3, shape=(16, 24, 24))
    expected = np.argmax((members[0].predict_probabilities(case) + members[1].predict_probabilities(case)) / 2, -1)
    dirs = fold_model_dirs(tmp_path)
    assert [d.parent.name for d in dirs] == ["fold_0", "fold_1"]
    (label_map,) = ensemble_predict(dirs, [case])
    np.testing.assert_array_equal(label_map, expected)
    (path,) = ensemble_predict(dirs, [case], out=tmp_path / "pred")
    array, affine = load_nifti(path)
    np.testing.assert_array_equal(array, expected)
    from miscnn_lite.evaluation import keep_largest_components
    largest = lambda label_map, case: keep_largest_components(label_map, labels={"foreground": (1, 2)})
    (post,) = ensemble_predict(dirs, [case], postprocess=largest)
    np.testing.assert_array_equal(post, keep_largest_components(expected, labels={"foreground": (1, 2)}))
    with pytest.raises(FileNotFoundError, match="no fold_K/model"):
        fold_model_dirs(tmp_path / "pred")
