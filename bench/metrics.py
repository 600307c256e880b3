"""HD95 and average symmetric surface distance on CT-sized masks: miscnn_lite vs medpy vs pymia.

One run, side by side, on the same masks: a (200, 512, 512) grid with spacing (2.5, 0.8, 0.8) mm
holding two kidney-like ellipsoids; the prediction is shifted, resized and has a stray blob.

    .venv/bin/python bench/metrics.py                 # full size (about 12 minutes on 2 cores: medpy dominates)
    .venv/bin/python bench/metrics.py --shape 60 160 160  # quick look

medpy computes the same definitions as miscnn_lite (surface voxels, pooled HD95, pooled ASSD), so
values must be equal; pymia uses other definitions (area-weighted surfels for HD95, SimpleITK's
all-voxel average Hausdorff distance for AVGDIST): its values are printed for information and its
times for comparison. Every method runs once per round, `--repeats` rounds interleaved; each time is the
median of its rounds. Ends with `name: value` lines.
"""
import argparse
import time
import warnings

import numpy as np

from miscnn_lite import evaluation as ev
from miscnn_lite.cli import _positive_int  # a count >= 1, as the CLI parses it


def ellipsoid(shape, center, radii):
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def kidney_masks(shape):
    "Reference and prediction masks (D, H, W) bool, sizes scaled to `shape`."
    d, h, w = shape
    ref = ellipsoid(shape, (d * 0.5, h * 0.5, w * 0.3), (d * 0.06, h * 0.09, w * 0.06))
    ref |= ellipsoid(shape, (d * 0.5, h * 0.5, w * 0.7), (d * 0.06, h * 0.09, w * 0.06))
    pred = ellipsoid(shape, (d * 0.5 + 1, h * 0.5 + 2, w * 0.3 - 1), (d * 0.065, h * 0.085, w * 0.06))
    pred |= ellipsoid(shape, (d * 0.5, h * 0.5 - 1, w * 0.7 + 2), (d * 0.055, h * 0.09, w * 0.065))
    pred |= ellipsoid(shape, (d * 0.45, h * 0.35, w * 0.5), (2, 4, 4))   # stray false positive
    return ref, pred


def interleaved(jobs: dict, repeats: int) -> dict:
    "{name: (value, median wall time in s)}: every job once per round, `repeats` rounds, the same count for all."
    values, times = {}, {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            start = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (values[name], float(np.median(times[name]))) for name in jobs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), metavar=("D", "H", "W"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.5, 0.8, 0.8))
    parser.add_argument("--skip-pymia", action="store_true", help="pymia's surfel sort is slow on large masks")
    parser.add_argument("--repeats", type=_positive_int, default=3,
                        help="interleaved rounds; each figure is the median of this many runs (default 3)")
    args = parser.parse_args()
    shape, spacing = tuple(args.shape), tuple(args.spacing)

    from medpy.metric import binary as medpy_binary

    ref, pred = kidney_masks(shape)
    print(f"masks {shape} spacing {spacing} mm: reference {ref.sum()} voxels, prediction {pred.sum()} voxels")

    jobs = {"ours_hd95": lambda: ev.hausdorff_distance(ev.surface_distances(ref, pred, spacing), 95),
            "ours_asd": lambda: ev.average_surface_distance(ev.surface_distances(ref, pred, spacing)),
            "ours_both": lambda: ev.compute_metrics(ref, pred, spacing, ["HDRFDST95", "AVGDIST"]),
            "medpy_hd95": lambda: medpy_binary.hd95(pred, ref, spacing),
            "medpy_asd": lambda: medpy_binary.assd(pred, ref, spacing)}
    if not args.skip_pymia:
        from pymia.evaluation.metric import AverageDistance, HausdorffDistance
        from pymia.evaluation.metric.base import Distances
        r8, p8 = ref.astype(np.uint8), pred.astype(np.uint8)

        def pymia_hd95():
            metric = HausdorffDistance(percentile=95)
            metric.distances = Distances(p8, r8, spacing)
            return metric.calculate()

        def pymia_avgdist():
            metric = AverageDistance()
            metric.reference, metric.prediction, metric.spacing = r8, p8, spacing
            return metric.calculate()

        jobs.update(pymia_hd95=pymia_hd95, pymia_avgdist=pymia_avgdist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = interleaved(jobs, args.repeats)
    (ours_hd95, t_ours_hd95), (ours_asd, t_ours_asd) = result["ours_hd95"], result["ours_asd"]
    (medpy_hd95, t_medpy_hd95), (medpy_asd, t_medpy_asd) = result["medpy_hd95"], result["medpy_asd"]
    rows = [("miscnn_lite HD95", ours_hd95, t_ours_hd95), ("medpy hd95", medpy_hd95, t_medpy_hd95),
            ("miscnn_lite ASSD", ours_asd, t_ours_asd), ("medpy assd", medpy_asd, t_medpy_asd),
            ("miscnn_lite HD95+ASSD together", result["ours_both"][0]["HDRFDST95"], result["ours_both"][1])]
    if not args.skip_pymia:
        rows.append(("pymia HDRFDST 95 (surfels: other definition)", *result["pymia_hd95"]))
        rows.append(("pymia AVGDIST (all voxels: other definition)", *result["pymia_avgdist"]))

    print(f"\n{'method':<48}{'value (mm)':>12}{'time (s)':>11}")
    for name, value, seconds in rows:
        print(f"{name:<48}{float(value):>12.6f}{seconds:>11.3f}")
    difference = max(abs(ours_hd95 - medpy_hd95), abs(ours_asd - medpy_asd))
    print()
    print(f"hd95_speedup_vs_medpy: {t_medpy_hd95 / t_ours_hd95:.1f}")
    print(f"asd_speedup_vs_medpy: {t_medpy_asd / t_ours_asd:.1f}")
    if not args.skip_pymia:
        print(f"hd95_speedup_vs_pymia: {rows[5][2] / t_ours_hd95:.1f}")
        print(f"asd_speedup_vs_pymia: {rows[6][2] / t_ours_asd:.1f}")
    print(f"max_abs_difference_mm: {difference:.3g}")


if __name__ == "__main__":
    main()
