"""Where a sim2real run's kidney voxels go on the real CT: the rows of bench/README.md's sim2real tables.

    python bench/sim2real_components.py [--mirror] [--open] [--pair] RUN_DIR [RUN_DIR ...]

For each run folder of the sim2real preset (`miscnn-lite experiment -f experiments/presets/sim2real.yaml`,
with its fold models), the fold ensemble segments TotalSegmentator's example CT without post-processing
(cached as RUN_DIR/raw_real_ct.npy) and the script prints one table row: the raw kidney Dice, the kidney
voxels found, the false ones (those more than 20 slices, 60 mm, below the lowest kidney slice: in the
pelvis), then result.json's real-CT Dice after post-processing, HD95 and minutes; below it the four largest
components with the TotalSegmentator structures they cover, and the Dice when exactly the components that
touch the real kidney are kept: what a perfect choice of whole components (the kind of post-processing the
kit does) would reach. Runs with context classes
(`phantom_context`) also get the share of each TotalSegmentator organ given each class, and the real-CT
Dice of the context classes (TotalSegmentator's labels are model output, not manual; it has no abdominal
wall muscle, so the muscle Dice counts the phantoms' wall muscle as false).
With `--mirror`, each run also gets the real-CT kidney Dice of its fold ensemble with test-time mirroring
(none, left-right, front-back), post-processed as the run was (its postprocess choice after its kidney_opening,
then its grow_steps: `evaluation.postprocess_kidneys`).
With `--open`, each run also gets the real-CT kidney Dice when its kidney components (as its postprocess keeps
them) are counted after a morphological opening of radius 0-3 voxels (`opening=`: bridges thinner than the ball
break, so a bowel loop joined to a kidney by a thin neck becomes a component of its own), then the run's
grow_steps.
With `--pair`, each run also gets the real-CT kidney Dice with its kidney components kept both ways: as the two
largest (postprocess kidneys) and as a pair (kidney_pair, `evaluation.keep_paired_components`: the largest pair on
opposite sides of the body's midline at overlapping heights), after the run's kidney_opening and before its
grow_steps.
"""
import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from miscnn_lite.evaluation import postprocess_kidneys
from miscnn_lite.io import fetch_example_data, open_dataset, reorient
from miscnn_lite.phantoms import CONTEXT_LABELS
from miscnn_lite.validation import ensemble_predict, fold_model_dirs

STRUCTURES = {"kidney": [2, 3, 23, 24], "liver": [5], "spleen": [1], "muscle": list(range(80, 90)),
              "bowel": [18, 19, 20], "bladder": [21]}    # TotalSegmentator v2 "total" numbers of each organ


def run_postprocessing(run: Path) -> dict:
    "The kidney post-processing a run's manifest records (`evaluation.postprocess_kidneys` arguments)."
    config = json.loads((run / "manifest.json").read_text())["config"]
    return dict(mode=config.get("postprocess", "kidneys"), opening=config.get("kidney_opening", 0),
                grow_steps=config.get("grow_steps", 0))


def mirrored(run: Path, case, reference, plain) -> None:
    """Real-CT kidney Dice of the run's fold ensemble under each test-time mirroring (`plain`: its cached
    prediction without), post-processed as the run was."""
    for name, axes in (("none", None), ("left-right", (2,)), ("front-back", (1,))):
        label_map = plain if axes is None else ensemble_predict(fold_model_dirs(run), [case], mirror_axes=axes)[0]
        kidney = postprocess_kidneys(label_map, case.image, **run_postprocessing(run)) > 0
        print(f"    test-time mirroring {name}: real-CT kidney Dice "
              f"{2 * (kidney & reference).sum() / (kidney.sum() + reference.sum()):.4f}")


def opened(run: Path, case, reference, plain) -> None:
    """Real-CT kidney Dice with the kidney components (as the run's postprocess keeps them) counted after an
    opening of radius 0-3 voxels (`plain`: the cached fold-ensemble prediction; runs with postprocess none: the
    opening changes nothing)."""
    for radius in (0, 1, 2, 3):
        found = postprocess_kidneys(plain, case.image, **{**run_postprocessing(run), "opening": radius}) > 0
        print(f"    opening radius {radius}: real-CT kidney Dice "
              f"{2 * (found & reference).sum() / (found.sum() + reference.sum()):.4f}, "
              f"{int((found & reference).sum()):,} kidney voxels found, {int((found & ~reference).sum()):,} false")


def pair(run: Path, case, reference, plain) -> None:
    """Real-CT kidney Dice with the kidney components kept as the two largest (postprocess kidneys) and as a
    left-right pair at one height (kidney_pair, `evaluation.keep_paired_components`), each after the run's
    kidney_opening and grown as the run was."""
    for name, mode in (("two largest", "kidneys"), ("left-right pair", "kidney_pair")):
        found = postprocess_kidneys(plain, case.image, **{**run_postprocessing(run), "mode": mode}) > 0
        print(f"    {name}: real-CT kidney Dice {2 * (found & reference).sum() / (found.sum() + reference.sum()):.4f}, "
              f"{int((found & reference).sum()):,} kidney voxels found, {int((found & ~reference).sum()):,} false")


def main(runs: list[str], mirror: bool = False, opening: bool = False, pairs: bool = False):
    examples = fetch_example_data() / "totalsegmentator_ct"
    case = open_dataset(examples).load_case("example_ct")
    image = nib.load(examples / "example_ct" / "structures.nii.gz")
    structures = reorient(np.asanyarray(image.dataobj), image.affine, "SPL")[0]
    names = json.loads((examples / "structures.json").read_text())
    reference = case.label > 0
    pelvis = np.nonzero(reference.any((1, 2)))[0].min() - 20        # axis 0 points up (SPL)
    for run in map(Path, runs):
        cache = run / "raw_real_ct.npy"
        if not cache.exists():
            np.save(cache, ensemble_predict(fold_model_dirs(run), [case])[0])
        predicted = np.load(cache)
        kidney = np.isin(predicted, [1, 2])
        found, false = int((kidney & reference).sum()), kidney & ~reference
        result = json.loads((run / "result.json").read_text())
        print(f"| {run.name} | {2 * found / (kidney.sum() + reference.sum()):.3f} | {found:,} | "
              f"{int(false.sum()):,} ({int(false[:pelvis].sum()):,}) | {result['real_ct']['DICE']:.3f} | "
              f"{result['real_ct']['HDRFDST95']:.1f} mm | {result['minutes']} |")
        if predicted.max() > 2:
            classes = {0: "background", 1: "kidney", 2: "tumor", **CONTEXT_LABELS}
            for organ, ids in STRUCTURES.items():
                shares = np.bincount(predicted[np.isin(structures, ids)], minlength=len(classes))
                shares = shares / shares.sum()
                print(f"    {organ}: " + ", ".join(f"{classes[c]} {s:.2f}" for c, s in enumerate(shares) if s >= 0.05))
            dice = {name: 2 * ((predicted == c) & np.isin(structures, STRUCTURES[name])).sum() /
                    ((predicted == c).sum() + np.isin(structures, STRUCTURES[name]).sum())
                    for c, name in CONTEXT_LABELS.items()}
            print("    real-CT Dice: " + ", ".join(f"{name} {d:.3f}" for name, d in dice.items()))
        components, n = ndimage.label(kidney)
        sizes = ndimage.sum(kidney, components, range(1, n + 1))
        for k in np.argsort(-sizes)[:4]:
            values, counts = np.unique(structures[components == k + 1], return_counts=True)
            top = sorted(zip(counts, values), reverse=True)[:2]
            print(f"    component {int(sizes[k]):,}: " + ", ".join(f"{names[str(int(v))]} {int(c):,}" for c, v in top))
        touching = np.isin(components, 1 + np.nonzero(ndimage.sum(reference, components, range(1, n + 1)))[0])
        print(f"    components touching the real kidney kept, the rest dropped: Dice "
              f"{2 * (touching & reference).sum() / (touching.sum() + reference.sum()):.3f}, "
              f"{int((touching & ~reference).sum()):,} false voxels kept")
        if mirror:
            mirrored(run, case, reference, predicted)
        if opening:
            opened(run, case, reference, predicted)
        if pairs:
            pair(run, case, reference, predicted)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="folders of sim2real runs, with their fold models")
    parser.add_argument("--mirror", action="store_true", help="also score test-time mirrored ensembles")
    parser.add_argument("--open", action="store_true", help="also score openings of radius 0-3 before the components")
    parser.add_argument("--pair", action="store_true", help="also score the kidney pair rule")
    args = parser.parse_args()
    main(args.runs, mirror=args.mirror, opening=args.open, pairs=args.pair)
