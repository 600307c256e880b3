"""README numbers come from run files: the tables equal what docs/results_table.py writes from docs/runs/."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("results_table", ROOT / "docs" / "results_table.py")
results_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_table)


def test_readme_tables_match_the_kept_runs():
    assert results_table.main(["--check"]) == 0


def fake_run(folder: Path, seed, kernels, kidney, tumor, minutes=11.0):
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(
        {"kidney_dice": kidney, "tumor_dice": tumor, "kidney+tumor_dice": 0.95, "tumor_dice_before_rule": 0.5,
         "test_ensemble_dice": {"kidney": 0.9, "tumor": 0.6}, "minutes": minutes, "load_average_15min": 1.1}))
    (folder / "manifest.json").write_text(json.dumps(
        {"config": {"seed": seed, "cpu_kernels": kernels}, "versions": {"tensorflow": "2.21.0", "keras": "3.15.0",
         "numpy": "2.1.0"}, "git_commit": "abcdef123456", "machine": {"cpu": "Test CPU", "cores": 2,
                                                                      "cpu_flags": ["avx2"]}}))
    return folder


def test_table_rows_spread_and_goals(tmp_path):
    runs = [results_table.read_run(fake_run(tmp_path / n, s, k, kid, tum))
            for n, s, k, kid, tum in [("a", 0, "onednn", 0.93, 0.66), ("b", 1, "eigen", 0.91, 0.60)]]
    block = results_table.table(runs)
    assert ("| seed0_onednn_avx2 | 0 | onednn | avx2 | 0.930 | 0.660 | 0.500 | 0.950 | 0.900 / 0.600 | 11.0 | 1.1 |"
            in block)
    assert "kidney dice: 0.910–0.930 over 2 run(s) (spread 0.020); goal ≥ 0.92 met by 1 of 2" in block
    assert "tumor dice: 0.600–0.660 over 2 run(s) (spread 0.060); goal ≥ 0.65 met by 1 of 2" in block
    assert ("Test CPU (2 cores; avx2 kernel flags), tensorflow 2.21.0, keras 3.15.0, numpy 2.1.0, "
            "commit abcdef1") in block


def test_table_replaces_only_the_marked_block(tmp_path):
    text = f"intro\n{results_table.START}\nold\n{results_table.END}\noutro\n"
    assert results_table.with_table(text, "new",
                                    tmp_path) == f"intro\n{results_table.START}\nnew\n{results_table.END}\noutro\n"
    with pytest.raises(SystemExit, match="needs one"):
        results_table.with_table("no markers", "new", tmp_path / "README.md")


def test_missing_run_files_are_named(tmp_path):
    with pytest.raises(SystemExit, match="result.json: missing"):
        results_table.read_run(tmp_path)


def test_sim2real_rows_and_goal(tmp_path):
    run = results_table.read_run(fake_run(tmp_path / "s", 0, "onednn", 0.9, 0.4))
    run["manifest"]["config"].update(real_ct_test=True, contrast_phase="non_contrast", augmentation="ct",
                                     n_cases=48, phantom_shape=[96, 112, 112], phantom_spacing=[3.0, 3.0, 3.0])
    run["result"]["real_ct"] = {"DICE": 0.8123, "HDRFDST95": 7.25,
                                "kidney_hu_p10_p50_p90": {"real_ct": [-12, 14, 33], "training_cases": [5, 30, 45]}}
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_96x112x112"
    block = results_table.sim2real_table([run])
    assert ("| sim2real_seed0_non_contrast_ct_96x112x112 | 48 × [96, 112, 112] at [3.0, 3.0, 3.0] mm | "
            "non_contrast | ct | 0.950 | 0.812 | 7.2 | 14 / 30 | 11.0 | 1.1 |") in block
    assert "real CT kidney Dice ≥ 0.8 (trained on phantoms only), met by 1 of 1" in block
    run["manifest"]["config"]["deep_supervision"] = True                  # a lever of its own: kept beside, not over
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_96x112x112_deep_supervision"
    run["manifest"]["config"].update(deep_supervision=False, phantom_fov_z=[-1.9, 0.9], phantom_shape=[134, 112, 112])
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_pelvis"
    row = "| 48 × [134, 112, 112] at [3.0, 3.0, 3.0] mm, z [-1.9, 0.9] (with pelvis) |"
    assert row in results_table.sim2real_table([run])
    run["manifest"]["config"]["phantom_spacing"] = [3.0, 3.5, 3.5]        # another phantom spacing: a run of its own
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_3x3.5x3.5mm_pelvis"
    run["manifest"]["config"].update(phantom_spacing=[3.0, 3.0, 3.0], phantom_myosteatosis=0.3)   # fatty muscle
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3"
    assert "(with pelvis), fatty muscle up to 0.3 |" in results_table.sim2real_table([run])
    run["manifest"]["config"]["phantom_distractors"] = 8                   # decoys: a lever of its own
    assert results_table.run_name(run) == ("sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3"
                                           "_distractors8")
    assert "fatty muscle up to 0.3, 8 decoys each |" in results_table.sim2real_table([run])
    run["manifest"]["config"].update(phantom_distractors=0, phantom_perirenal_bowel=2)   # bowel against the kidneys
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3_bowel2"
    assert "fatty muscle up to 0.3, 2 bowel loops against the kidneys |" in results_table.sim2real_table([run])
    run["manifest"]["config"]["phantom_perirenal_bowel"] = 0
    run["manifest"]["config"]["n_cases"] = 64                                           # more phantoms
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3_cases64"
    assert "| 64 × [134, 112, 112] at" in results_table.sim2real_table([run])
    run["manifest"]["config"]["n_cases"] = 48
    run["manifest"]["config"].update(phantom_distractors=0, phantom_kidney_scale=1.25)   # larger kidneys
    assert results_table.run_name(run) == ("sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3"
                                           "_kidneys1.25")
    assert "fatty muscle up to 0.3, kidneys × 1.25 |" in results_table.sim2real_table([run])
    run["manifest"]["config"].update(phantom_kidney_scale=1.0, phantom_pelvis="adult")   # another pelvis model
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_adultpelvis_myosteatosis0.3"
    assert "z [-1.9, 0.9] (with adult pelvis), fatty muscle up to 0.3 |" in results_table.sim2real_table([run])
    run["manifest"]["config"].update(phantom_pelvis="simple", phantom_context=True)   # organ classes: another lever
    assert results_table.run_name(run) == "sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3_context"
    assert "fatty muscle up to 0.3, liver/spleen/muscle/bowel/bladder trained as classes |" in \
        results_table.sim2real_table([run])
    run["manifest"]["config"].update(phantom_context=False, patch_shape=[1, 112, 112], batch_size=3)  # whole slices
    assert results_table.run_name(run) == ("sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3"
                                           "_patch112x112_batch3")
    assert "fatty muscle up to 0.3, patches [1, 112, 112] × 3 |" in results_table.sim2real_table([run])
    run["manifest"]["config"].update(analysis_mode="2.5d", slab_neighbours=3)       # 7-slice slabs: kept beside
    assert results_table.run_name(run) == ("sim2real_seed0_non_contrast_ct_134x112x112_pelvis_myosteatosis0.3"
                                           "_patch112x112_batch3_slab7")
    assert "patches [1, 112, 112] × 3, 7-slice slabs |" in results_table.sim2real_table([run])
    run["manifest"]["config"]["grow_steps"] = 1                                        # the HU-constrained growth
    assert results_table.run_name(run).endswith("_batch3_slab7_grow1")
    assert "7-slice slabs; kidneys grown 1 voxel layer(s) within their HU |" in results_table.sim2real_table([run])
    run["manifest"]["config"]["kidney_opening"] = 2                                   # components after an opening
    assert results_table.run_name(run).endswith("_batch3_slab7_open2_grow1")
    assert ("7-slice slabs; kidney components counted after an opening of 2 voxel(s); kidneys grown 1 voxel layer(s)"
            in results_table.sim2real_table([run]))
    run["manifest"]["config"]["kidney_opening"] = 0
    run["manifest"]["config"]["grow_steps"] = 0
    run["manifest"]["config"]["slab_neighbours"] = 2                                  # the preset's 5 slices
    assert results_table.run_name(run).endswith("_batch3")
