"""Preprocessing speed, side by side in one run (CPU).

1. Resampling a 200 × 512 × 512 float32 CT volume (2.5 × 0.8 × 0.8 mm) to the KiTS19 target spacing
   3.22 × 1.62 × 1.62 mm, linear: SimpleITK (`miscnn_lite.preprocessing.resample_array`, all cores, and
   on one thread) vs `scipy.ndimage.zoom(order=1, grid_mode=True)` (one core), same output grid; then the
   inverse (back to the 200 × 512 × 512 grid), linear for probabilities and nearest for labels.
2. Loading that volume: `.nii.gz` (nibabel via `miscnn_lite.io.load_nifti`) vs a raw `.npy` opened as a
   memmap (open only, and open + read every voxel), plus reading one 80 × 160 × 160 patch.
   Files are written to a temporary folder first; reads hit the warm page cache for both formats.

Usage: python bench/preprocessing.py [--shape 200 512 512] [--repeats 3]
Every call runs once per round, the calls of a comparison side by side in a rotating order; times are medians
over the rounds and speedups the median of the rounds' ratios. Ends with one `name: value` line per figure.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from miscnn_lite.cli import _positive_int  # a count >= 1, as the CLI parses it
from miscnn_lite.io import affine_from_spacing, load_nifti, save_nifti
from miscnn_lite.preprocessing import resample_array

SPACING, TARGET = (2.5, 0.8, 0.8), (3.22, 1.62, 1.62)


def ct_like_volume(shape, seed=0) -> np.ndarray:
    "Integer-valued HU in float32: air, a body ellipse of soft tissue, noise (like a real scan, not constant)."
    rng = np.random.default_rng(seed)
    d, h, w = shape
    y, x = np.ogrid[:h, :w]
    body = ((y - h / 2) / (0.42 * h)) ** 2 + ((x - w / 2) / (0.47 * w)) ** 2 <= 1
    vol = np.where(body, 40.0, -1000.0).astype(np.float32)[None].repeat(d, 0)
    vol += rng.normal(0, 20, shape).astype(np.float32)
    return np.round(vol)


def interleaved(calls: dict, repeats: int) -> tuple[dict, dict]:
    """Each call once per round, side by side, in an order that rotates every round (none always runs first, on a
    cold cache or a busy core); returns the seconds of every round by name, and each call's last result."""
    times, out, names = {n: [] for n in calls}, {}, list(calls)
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            out[n] = calls[n]()
            times[n].append(time.perf_counter() - t)
    return times, out


def median(times, name) -> float:
    return float(np.median(times[name]))


def ratio(times, slow, fast) -> float:
    "Median over rounds of slow / fast, each ratio from one round."
    return float(np.median(np.array(times[slow]) / np.array(times[fast])))


def one_thread(fn):
    "`fn` run with SimpleITK on one thread (the setting restored after)."
    def run():
        threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            return fn()
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=_positive_int, nargs=3, default=(200, 512, 512), help="D H W voxels")
    ap.add_argument("--repeats", type=_positive_int, default=3, help="interleaved rounds (median taken)")
    args = ap.parse_args()
    shape = tuple(args.shape)
    vol = ct_like_volume(shape)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    print(f"volume {shape} float32 ({vol.nbytes / 2**20:.0f} MiB), spacing {SPACING} → {TARGET} mm, "
          f"{os.cpu_count()} CPU cores, SimpleITK {threads} threads; medians of {args.repeats} interleaved rounds")

    # scipy's zoom spans the field of view with the rounded shape: give SimpleITK that exact grid too
    new_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, SPACING, TARGET))
    grid_spacing = tuple(s * n / m for s, n, m in zip(SPACING, shape, new_shape))
    zoom = tuple(m / n for n, m in zip(shape, new_shape))
    down = lambda: resample_array(vol, SPACING, grid_spacing, new_shape, order=1)       # noqa: E731
    t, out = interleaved({"sitk": down, "sitk1": one_thread(down),
                          "scipy": lambda: ndimage.zoom(vol, zoom, order=1, mode="nearest", grid_mode=True)},
                         args.repeats)
    ours, ref = out["sitk"], out["scipy"]
    assert ref.shape == ours.shape == new_shape, (ref.shape, ours.shape)
    diff = float(np.abs(ours - ref).max())
    print(f"resample: SimpleITK {median(t, 'sitk'):.2f} s ({median(t, 'sitk1'):.2f} s on 1 thread), scipy "
          f"{median(t, 'scipy'):.2f} s → {ours.shape}; max |difference| {diff:.2g} HU")
    # the inverse: a prediction back onto the original (finer) grid, probabilities linear, labels nearest
    labels = (ours > 30).astype(np.uint8)
    back = tuple(1 / z for z in zoom)
    ti, inv = interleaved({
        "up_sitk": lambda: resample_array(ours, grid_spacing, SPACING, shape, order=1),
        "up_scipy": lambda: ndimage.zoom(ours, back, order=1, mode="nearest", grid_mode=True),
        "lab_sitk": lambda: resample_array(labels, grid_spacing, SPACING, shape, order=0),
        "lab_scipy": lambda: ndimage.zoom(labels, back, order=0, mode="nearest", grid_mode=True)}, args.repeats)
    assert inv["up_sitk"].shape == inv["up_scipy"].shape == shape
    print(f"inverse to {shape}: linear SimpleITK {median(ti, 'up_sitk'):.2f} s, scipy {median(ti, 'up_scipy'):.2f} s; "
          f"labels nearest SimpleITK {median(ti, 'lab_sitk'):.2f} s, scipy {median(ti, 'lab_scipy'):.2f} s; "
          f"max |difference| {np.abs(inv['up_sitk'] - inv['up_scipy']).max():.2g} HU")

    with tempfile.TemporaryDirectory() as tmp:
        nii, npy = Path(tmp) / "imaging.nii.gz", Path(tmp) / "imaging.npy"
        tw, _ = interleaved({"nii": lambda: save_nifti(nii, vol, affine_from_spacing(SPACING)),
                             "npy": lambda: np.save(npy, vol)}, 1)        # written once: the files the reads use
        d, h, w = (min(a, b) for a, b in zip((80, 160, 160), shape))
        patch = (slice(shape[0] // 2 - d // 2, shape[0] // 2 + d - d // 2), slice(100, 100 + h), slice(120, 120 + w))
        tl, loaded = interleaved({"nii": lambda: load_nifti(nii)[0], "open": lambda: np.load(npy, mmap_mode="r"),
                                  "read": lambda: np.array(np.load(npy, mmap_mode="r")),
                                  "patch": lambda: np.array(np.load(npy, mmap_mode="r")[patch])}, args.repeats)
        assert np.array_equal(np.asarray(loaded["nii"], np.float32), vol) and np.array_equal(loaded["read"], vol)
        nii_mb, npy_mb = nii.stat().st_size / 2**20, npy.stat().st_size / 2**20
    print(f"write: .nii.gz {tw['nii'][0]:.2f} s ({nii_mb:.0f} MiB), .npy {tw['npy'][0]:.2f} s ({npy_mb:.0f} MiB)")
    print(f"load: .nii.gz {median(tl, 'nii'):.2f} s; .npy memmap open {median(tl, 'open') * 1e3:.2f} ms, full read "
          f"{median(tl, 'read'):.3f} s, one {d}×{h}×{w} patch {median(tl, 'patch') * 1e3:.1f} ms")

    figures = {
        "resample_sitk_s": median(t, "sitk"), "resample_scipy_s": median(t, "scipy"),
        "resample_speedup": ratio(t, "scipy", "sitk"), "resample_max_abs_diff_hu": diff,
        "resample_sitk_1thread_s": median(t, "sitk1"), "sitk_threads": threads,
        "inverse_resample_sitk_s": median(ti, "up_sitk"), "inverse_resample_scipy_s": median(ti, "up_scipy"),
        "inverse_resample_speedup": ratio(ti, "up_scipy", "up_sitk"),
        "inverse_label_sitk_s": median(ti, "lab_sitk"), "inverse_label_scipy_s": median(ti, "lab_scipy"),
        "inverse_label_speedup": ratio(ti, "lab_scipy", "lab_sitk"),
        "nii_gz_load_s": median(tl, "nii"), "npy_memmap_open_s": median(tl, "open"),
        "npy_memmap_load_s": median(tl, "read"), "load_speedup": ratio(tl, "nii", "read"),
        "npy_memmap_patch_s": median(tl, "patch"), "patch_vs_nii_gz_speedup": ratio(tl, "nii", "patch"),
        "nii_gz_size_mib": nii_mb, "npy_size_mib": npy_mb,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.4g}")


if __name__ == "__main__":
    main()
