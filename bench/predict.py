"""Prediction benchmark (issue 6): sliding-window prediction of a whole phantom volume vs. a bare
batched forward pass over exactly the same patches.

predict_overhead_ratio = time of `sliding_window_predict` (patch grid, batching, Gaussian merge) /
time of `model.predict_on_batch` over the same patch batches prepared in advance. Goal <= 1.05.
CPU only here; the GPU inference goal (>= 100 patches/s of 80x160x160 at batch 8) needs a GPU session.

Usage: python bench/predict.py [--quick]; ends with `predict_overhead_ratio: X`.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np

from miscnn_lite.models import unet
from miscnn_lite.patching import iter_patch_batches, patch_grid, sliding_window_predict
from miscnn_lite.phantoms import generate_phantom


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    shape, patch, base = ((48, 96, 96), (32, 64, 64), 8) if args.quick else ((64, 192, 192), (32, 64, 64), 8)
    batch_size, overlap = 4, 0.5
    volume = generate_phantom(0, shape=shape).image.astype(np.float32)[..., None]
    volume = (volume - volume.mean()) / volume.std()
    model = unet(3, depth=3, base_filters=base)
    grid = patch_grid(volume.shape, patch, overlap)
    batches = [b for _, b in iter_patch_batches(volume, grid, batch_size)]
    forward = lambda b: np.asarray(model.predict_on_batch(b))
    forward(batches[0])                                                     # compile + warm-up
    t_bare, t_sw = [], []
    for _ in range(3 if args.quick else 5):                                 # interleaved
        t = time.perf_counter()
        for b in batches:
            forward(b)
        t_bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        sliding_window_predict(volume, patch, overlap, forward, batch_size=batch_size, weighting="gaussian")
        t_sw.append(time.perf_counter() - t)
    bare, sw = float(np.median(t_bare)), float(np.median(t_sw))
    print(f"volume {shape}, patch {patch}, overlap {overlap}, {len(grid)} patches, batch {batch_size}, CPU")
    print(f"bare forward: {bare:.2f} s ({len(grid) / bare:.1f} patches/s); sliding window: {sw:.2f} s")
    print(f"predict_overhead_ratio: {sw / bare:.3f}")


if __name__ == "__main__":
    main()
