"""Tumor Dice by tumor size, per finished `kits19_cv` run: which tumors a change reaches.

    python bench/tumor_sizes.py [--phantoms DIR] [--bins 255 1090] [--contrast [--contrast-bins 40 70]] RUN_DIR ...

Each validation case's tumor size is the number of tumor voxels (label 2) of its segmentation file: in the run's
own `phantoms/` folder, or in `--phantoms DIR` for runs kept without their data (`bench/runs`, `docs/runs`), whose
files must match the run's manifest SHA-256 (the same seed makes the same phantoms on every machine). Each run's
per-case tumor Dice after the rule (`metrics_postprocessed.csv`) is averaged per size bin, and over the tumor-free
cases (1 where no tumor is predicted, else 0). Prints one markdown row per run.

`--contrast` prints a second table: the tumors under the first size bin (the small ones) by their contrast, the
distance in HU between the median of the tumor's voxels and the median of the kidney's (label 1) in the case's
`imaging.nii.gz` (checked against the manifest too): under 40, 40-70 and over 70 HU by default (`--contrast-bins`).
"""
import argparse
import csv
import functools
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np

KIDNEY, TUMOR = 1, 2


def tumor_dice(run: Path) -> dict:
    "case -> mean tumor Dice after the rule over the folds that validated it (one fold each in a k-fold run)."
    path = run / "metrics_postprocessed.csv"
    if not path.is_file():
        raise SystemExit(f"{run}: no metrics_postprocessed.csv; give the folder of a finished kits19_cv run.")
    scores = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["label"] == "tumor" and row["metric"] == "DICE":
                scores.setdefault(row["case"], []).append(float(row["value"]))
    return {case: float(np.mean(v)) for case, v in scores.items()}


@functools.lru_cache
def recorded_sha256(run: Path) -> dict:
    "The data SHA-256 the run's manifest recorded, read once per run."
    return json.loads((run / "manifest.json").read_text()).get("data_sha256", {})


def case_array(run: Path, phantoms: Path | None, case: str, file: str) -> np.ndarray:
    "The voxels of `case/file`, from a file whose SHA-256 is the one the run's manifest recorded."
    path, name = (phantoms or run / "phantoms") / case / file, f"{case}/{file}"
    recorded = recorded_sha256(run)
    if not path.is_file():
        raise SystemExit(f"{path}: missing; give --phantoms DIR, a folder holding the run's cases (a run with the "
                         "same seed and phantom settings keeps them in its phantoms/ folder).")
    if name in recorded and hashlib.sha256(path.read_bytes()).hexdigest() != recorded[name]:
        raise SystemExit(f"{path}: not the file {run} was scored on (its SHA-256 differs from the run's "
                         "manifest): give --phantoms of a run with the same seed and phantom settings.")
    return np.asanyarray(nib.load(path).dataobj)


def case_labels(run: Path, phantoms: Path | None, cases) -> dict:
    "case -> label map, each read once from a file whose SHA-256 is the one the run's manifest recorded."
    return {case: case_array(run, phantoms, case, "segmentation.nii.gz") for case in cases}


def tumor_sizes(labels: dict) -> dict:
    "case -> tumor voxels of each label map (`case_labels`)."
    return {case: int((label == TUMOR).sum()) for case, label in labels.items()}


def tumor_contrast(run: Path, phantoms: Path | None, labels: dict) -> dict:
    """case -> |median tumor intensity - median kidney intensity| (HU) for the label maps (`case_labels`) with a
    tumor and a kidney; the images are read from the run's files, checked as the label maps were."""
    found = {}
    for case, label in labels.items():
        if (label == TUMOR).any() and (label == KIDNEY).any():
            image = case_array(run, phantoms, case, "imaging.nii.gz")
            found[case] = float(abs(np.median(image[label == TUMOR]) - np.median(image[label == KIDNEY])))
    return found


def by_contrast(dice: dict, sizes: dict, contrast: dict, small: int, bins=(40, 70)) -> list:
    "[(name, mean Dice or None, cases)] of the tumors under `small` voxels by contrast bin (upper edges inclusive)."
    lo, hi = bins
    groups = [(f"small, under {lo:g} HU", lambda c: c < lo), (f"small, {lo:g}-{hi:g} HU", lambda c: lo <= c <= hi),
              (f"small, over {hi:g} HU", lambda c: c > hi)]
    rows = []
    for name, inside in groups:
        values = [dice[c] for c in contrast if 0 < sizes[c] < small and inside(contrast[c])]
        rows.append((name, float(np.mean(values)) if values else None, len(values)))
    return rows


def print_rows(title: str, rows: list, header: list | None) -> list:
    "Print one markdown row (after the header, if none was printed yet); the header printed."
    if header is None:
        header = ["run"] + [name for name, _, _ in rows]
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
    cells = [f"{v:.3f} ({n})" if v is not None else f"- ({n})" for _, v, n in rows]
    print(f"| {title} | " + " | ".join(cells) + " |")
    return header


def by_size(dice: dict, sizes: dict, bins=(255, 1090)) -> list:
    "[(name, mean Dice or None, cases)] for the tumor-free cases and each size bin (upper edges inclusive)."
    lo, hi = bins
    groups = [("tumor-free", lambda n: n == 0), (f"under {lo} voxels", lambda n: 0 < n < lo),
              (f"{lo}-{hi} voxels", lambda n: lo <= n <= hi), (f"over {hi} voxels", lambda n: n > hi)]
    rows = []
    for name, inside in groups:
        values = [dice[c] for c in dice if inside(sizes[c])]
        rows.append((name, float(np.mean(values)) if values else None, len(values)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--phantoms", type=Path, default=None)
    parser.add_argument("--bins", nargs=2, type=int, default=(255, 1090))
    parser.add_argument("--contrast", action="store_true", help="also the small tumors' Dice by contrast (HU)")
    parser.add_argument("--contrast-bins", nargs=2, type=float, default=(40.0, 70.0))
    args = parser.parse_args(argv)
    if not 0 < args.bins[0] <= args.bins[1]:
        raise SystemExit(f"--bins {args.bins[0]} {args.bins[1]}: two tumor sizes in voxels, 0 < low <= high.")
    if not 0 < args.contrast_bins[0] <= args.contrast_bins[1]:
        raise SystemExit(f"--contrast-bins {args.contrast_bins[0]} {args.contrast_bins[1]}: two contrasts in HU, "
                         "0 < low <= high.")
    header, tables = None, []
    for run in args.runs:
        dice = tumor_dice(run)
        labels = case_labels(run, args.phantoms, sorted(dice))
        sizes = tumor_sizes(labels)
        header = print_rows(run.name, by_size(dice, sizes, args.bins), header)
        if args.contrast:
            tables.append((run.name, by_contrast(dice, sizes, tumor_contrast(run, args.phantoms, labels),
                                                 args.bins[0], args.contrast_bins)))
        del labels
    if tables:
        print()
        header = None
        for name, rows in tables:
            header = print_rows(name, rows, header)


if __name__ == "__main__":
    main()
