"""Preprocessing speed, side by side in one run (CPU).

1. Resampling a 200 × 512 × 512 float32 CT volume (2.5 × 0.8 × 0.8 mm) to the KiTS19 target spacing
   3.22 × 1.62 × 1.62 mm, linear: SimpleITK (`miscnn_lite.preprocessing.resample_array`, all cores, and
   on one thread) vs `scipy.ndimage.zoom(order=1, grid_mode=True)` (one core), same output grid; then the
   inverse (back to the 200 × 512 × 512 grid), linear for probabilities and nearest for labels.
2. Loading that volume: `.nii.gz` (nibabel via `miscnn_lite.io.load_nifti`) vs a raw `.npy` opened as a
   memmap (open only, and open + read every voxel), plus reading one 80 × 160 × 160 patch.
   Files are written to a temporary folder first; reads hit the warm page cache for both formats.

Usage: python bench/preprocessing.py [--shape 200 512 512] [--repeats 3]
Ends with one `name: value` line per figure.
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


def best_of(fn, repeats):
    "Minimum wall time (s) of `repeats` calls, and the last result."
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(200, 512, 512), help="D H W voxels")
    ap.add_argument("--repeats", type=_positive_int, default=3)
    args = ap.parse_args()
    shape = tuple(args.shape)
    vol = ct_like_volume(shape)
    print(f"volume {shape} float32 ({vol.nbytes / 2**20:.0f} MiB), spacing {SPACING} → {TARGET} mm, "
          f"{os.cpu_count()} CPU cores")

    # scipy's zoom spans the field of view with the rounded shape: give SimpleITK that exact grid too
    new_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, SPACING, TARGET))
    grid_spacing = tuple(s * n / m for s, n, m in zip(SPACING, shape, new_shape))
    t_sitk, ours = best_of(lambda: resample_array(vol, SPACING, grid_spacing, new_shape, order=1), args.repeats)
    zoom = tuple(m / n for n, m in zip(shape, new_shape))
    t_scipy, ref = best_of(lambda: ndimage.zoom(vol, zoom, order=1, mode="nearest", grid_mode=True),
                           max(1, args.repeats - 1))
    assert ref.shape == ours.shape == new_shape, (ref.shape, ours.shape)
    diff = float(np.abs(ours - ref).max())
    print(f"resample: SimpleITK {t_sitk:.2f} s, scipy {t_scipy:.2f} s → {ours.shape}; max |difference| {diff:.2g} HU")
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    t_sitk1, _ = best_of(lambda: resample_array(vol, SPACING, grid_spacing, new_shape, order=1), args.repeats)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    print(f"resample: SimpleITK on 1 thread {t_sitk1:.2f} s ({threads} threads: {t_sitk:.2f} s)")
    # the inverse: a prediction back onto the original (finer) grid, probabilities linear, labels nearest
    t_up_sitk, up = best_of(lambda: resample_array(ours, grid_spacing, SPACING, shape, order=1), args.repeats)
    t_up_scipy, up_ref = best_of(lambda: ndimage.zoom(ours, tuple(1 / z for z in zoom), order=1, mode="nearest",
                                                      grid_mode=True), max(1, args.repeats - 1))
    assert up.shape == up_ref.shape == shape
    labels = (ours > 30).astype(np.uint8)
    t_lab_sitk, _ = best_of(lambda: resample_array(labels, grid_spacing, SPACING, shape, order=0), args.repeats)
    t_lab_scipy, _ = best_of(lambda: ndimage.zoom(labels, tuple(1 / z for z in zoom), order=0, mode="nearest",
                                                  grid_mode=True), max(1, args.repeats - 1))
    print(f"inverse to {shape}: linear SimpleITK {t_up_sitk:.2f} s, scipy {t_up_scipy:.2f} s; "
          f"labels nearest SimpleITK {t_lab_sitk:.2f} s, scipy {t_lab_scipy:.2f} s; "
          f"max |difference| {np.abs(up - up_ref).max():.2g} HU")

    with tempfile.TemporaryDirectory() as tmp:
        nii, npy = Path(tmp) / "imaging.nii.gz", Path(tmp) / "imaging.npy"
        t = time.perf_counter(); save_nifti(nii, vol,
                                            affine_from_spacing(SPACING)); t_write_nii = time.perf_counter() - t
        t = time.perf_counter(); np.save(npy, vol); t_write_npy = time.perf_counter() - t
        t_nii, (loaded, _) = best_of(lambda: load_nifti(nii), args.repeats)
        assert np.array_equal(np.asarray(loaded, np.float32), vol)
        t_open, mm = best_of(lambda: np.load(npy, mmap_mode="r"), args.repeats)
        t_read, full = best_of(lambda: np.array(np.load(npy, mmap_mode="r")), args.repeats)
        assert np.array_equal(full, vol)
        d, h, w = (min(a, b) for a, b in zip((80, 160, 160), shape))
        patch = (slice(shape[0] // 2 - d // 2, shape[0] // 2 + d - d // 2), slice(100, 100 + h), slice(120, 120 + w))
        t_patch, _ = best_of(lambda: np.array(np.load(npy, mmap_mode="r")[patch]), args.repeats)
        nii_mb, npy_mb = nii.stat().st_size / 2**20, npy.stat().st_size / 2**20
    print(f"write: .nii.gz {t_write_nii:.2f} s ({nii_mb:.0f} MiB), .npy {t_write_npy:.2f} s ({npy_mb:.0f} MiB)")
    print(f"load: .nii.gz {t_nii:.2f} s; .npy memmap open {t_open * 1e3:.2f} ms, full read {t_read:.3f} s, "
          f"one {d}×{h}×{w} patch {t_patch * 1e3:.1f} ms")

    figures = {
        "resample_sitk_s": t_sitk, "resample_scipy_s": t_scipy, "resample_speedup": t_scipy / t_sitk,
        "resample_max_abs_diff_hu": diff, "resample_sitk_1thread_s": t_sitk1, "sitk_threads": threads,
        "inverse_resample_sitk_s": t_up_sitk, "inverse_resample_scipy_s": t_up_scipy,
        "inverse_resample_speedup": t_up_scipy / t_up_sitk,
        "inverse_label_sitk_s": t_lab_sitk, "inverse_label_scipy_s": t_lab_scipy,
        "inverse_label_speedup": t_lab_scipy / t_lab_sitk,
        "nii_gz_load_s": t_nii, "npy_memmap_open_s": t_open, "npy_memmap_load_s": t_read,
        "load_speedup": t_nii / t_read, "npy_memmap_patch_s": t_patch, "patch_vs_nii_gz_speedup": t_nii / t_patch,
        "nii_gz_size_mib": nii_mb, "npy_size_mib": npy_mb,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.4g}")


if __name__ == "__main__":
    main()
