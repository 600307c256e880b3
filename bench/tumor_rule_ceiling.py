"""How much a tumor rule could gain on a finished `kits19_cv` run: a practical ceiling for rules that keep or drop
whole predicted tumor components.

    python bench/tumor_rule_ceiling.py RUN_DIR ...

The rule of `kits19_cv` (`tune_postprocessing`) decides per predicted tumor component whether it stays tumor or becomes
kidney, by its size against the case's kidney (and whether it is the largest). An oracle keeps exactly the components
that touch a true tumor and drops every other one: a practical ceiling for such rules (not a strict one: dropping a
mostly false component that touches a true tumor could still raise a case's Dice). Per run this prints the
mean tumor Dice over the validation cases (tumor-free ones score 1 without a predicted tumor, else 0, as in the run):

- `before`: the saved predictions (`fold_K/predictions`, kidney post-processing done, no tumor rule);
- `rule`: the run's own post-processed predictions (`fold_K/predictions_postprocessed`);
- `oracle`: the saved predictions with every tumor component that touches no true tumor turned into kidney;

and counts, over the true tumors (components of label 2, 26-connected), those the network found (at least 30 % of the
tumor's voxels predicted tumor before the rule) and the rule then deleted (none left after it), and the tumor-free
cases that keep a false tumor after the rule. The run needs its `phantoms/` folder (a run of `make experiment`).
"""
import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from miscnn_lite.evaluation import confusion, dice

TUMOR = 2
FULL = np.ones((3, 3, 3), bool)      # 26-connectivity, as the rule's components


def oracle(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    "The tumor mask of `prediction` without the components that touch no voxel of `reference`."
    components, n = ndimage.label(prediction == TUMOR, structure=FULL)
    touching = np.unique(components[reference & (components > 0)])
    return np.isin(components, touching) & (components > 0)


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def run_figures(run: Path) -> dict:
    folds = sorted(p for p in run.glob("fold_*") if (p / "predictions").is_dir())
    if not folds or not (run / "phantoms").is_dir():
        raise SystemExit(f"{run}: give the folder of a finished kits19_cv run on phantoms (fold_K/predictions and "
                         "phantoms/ inside).")
    scores = {"before": [], "rule": [], "oracle": []}
    found = deleted = free = free_kept = 0
    for fold in folds:
        for path in sorted((fold / "predictions").glob("*.nii.gz")):
            case = path.name[: -len(".nii.gz")]
            post_path = fold / "predictions_postprocessed" / path.name
            if not post_path.is_file():
                raise SystemExit(f"{post_path}: missing; the run did not finish its tumor rule.")
            reference = load(run / "phantoms" / case / "segmentation.nii.gz") == TUMOR
            before, after = load(path), load(post_path)
            scores["before"].append(dice(confusion(reference, before == TUMOR)))
            scores["rule"].append(dice(confusion(reference, after == TUMOR)))
            scores["oracle"].append(dice(confusion(reference, oracle(before, reference))))
            if not reference.any():
                free += 1
                free_kept += bool((after == TUMOR).any())
                continue
            tumors, n = ndimage.label(reference, structure=FULL)
            for k in range(1, n + 1):
                voxels = tumors == k
                if (before[voxels] == TUMOR).mean() >= 0.3:
                    found += 1
                    deleted += not (after[voxels] == TUMOR).any()
    return {**{k: float(np.mean(v)) for k, v in scores.items()}, "cases": len(scores["rule"]),
            "found": found, "deleted": deleted, "free": free, "free_kept": free_kept}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="results folders of kits19_cv runs")
    args = p.parse_args(argv)
    print("| run | tumor Dice before the rule | after the rule | oracle component rule | true tumors found, "
          "then deleted by the rule | tumor-free cases with a false tumor after the rule |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run in args.runs:
        f = run_figures(run)
        print(f"| {run.name} | {f['before']:.3f} | {f['rule']:.3f} | {f['oracle']:.3f} | {f['deleted']} of "
              f"{f['found']} | {f['free_kept']} of {f['free']} |")


if __name__ == "__main__":
    main()
