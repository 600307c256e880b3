"""Test-time body-size matching: the real CT shrunk in-plane before a sim2real run's fold ensemble segments it.

    python bench/sim2real_scale.py RUN_DIR [RUN_DIR ...] [--scales 1.0 1.1 1.15 1.2 1.3]

The sim2real phantoms' bodies (and organs) are smaller than this patient's. For each factor f the real CT is
resampled from 3 mm to 3·f mm in-plane (`preprocessing.resample_array`, linear: organs f times smaller in
voxels), segmented by the run's fold ensemble, the label map resampled back (nearest) and post-processed as
the run was (its postprocess choice, kidney_opening and grow_steps: `evaluation.postprocess_kidneys`). f = 1
reproduces the run's result.json. Besides
the listed factors the script uses one chosen without the real labels: the square root of the ratio of the
median body cross-section (HU > -500) of the real CT to that of the run's first 12 training phantoms.
Prints one row per run and factor: raw Dice, kidney voxels found (of 12,224), false voxels, Dice after
post-processing.
"""
import argparse
from pathlib import Path

import numpy as np
from sim2real_components import run_postprocessing  # bench/, on sys.path when a script runs

from miscnn_lite.evaluation import postprocess_kidneys
from miscnn_lite.io import case_from_arrays, fetch_example_data, open_dataset
from miscnn_lite.preprocessing import resample_array
from miscnn_lite.validation import ensemble_predict, fold_model_dirs


def body_area_mm2(case) -> float:
    "Median area (mm²) of the body (HU > -500) over the slices that hold any."
    areas = (case.image > -500).sum((1, 2)) * case.spacing[1] * case.spacing[2]
    return float(np.median(areas[areas > 0]))


def shrunk_prediction(dirs, case, f: float) -> np.ndarray:
    "The ensemble's label map of `case` resampled to f times its in-plane spacing, mapped back to its grid."
    spacing = np.array(case.spacing, float)
    coarse = spacing * [1, f, f]
    image = resample_array(case.image, spacing, coarse, order=1)
    small = case_from_arrays(np.round(image).astype(np.int16), np.zeros(image.shape, np.uint8), case_id=case.id,
                             affine=np.diag([*coarse, 1.0]))
    return resample_array(ensemble_predict(dirs, [small])[0], coarse, spacing, case.image.shape, order=0)


def main(runs: list[str], scales: list[float]):
    case = open_dataset(fetch_example_data() / "totalsegmentator_ct").load_case("example_ct")
    reference = case.label > 0
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())  # noqa: E731
    print("| run | factor | raw Dice | kidney voxels found | false voxels | real-CT kidney Dice |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in map(Path, runs):
        phantoms = open_dataset(run / "phantoms")
        body = np.median([body_area_mm2(phantoms.load_case(c)) for c in phantoms.case_ids[:12]])
        rule = round(float(np.sqrt(body_area_mm2(case) / body)), 3)
        dirs = fold_model_dirs(run)
        for name, f in [*((f"{f:g}", f) for f in scales), (f"{rule:g} (body area)", rule)]:
            predicted = shrunk_prediction(dirs, case, f)
            kidney = predicted > 0
            post = postprocess_kidneys(predicted, case.image, **run_postprocessing(run)) > 0
            print(f"| {run.name} | {name} | {dice(kidney, reference):.3f} | {int((kidney & reference).sum()):,} | "
                  f"{int((kidney & ~reference).sum()):,} | {dice(post, reference):.3f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="sim2real run folders (with fold_K/ models and phantoms/)")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.1, 1.15, 1.2, 1.3])
    args = parser.parse_args()
    main(args.runs, args.scales)
