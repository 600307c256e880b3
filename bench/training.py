"""Training-step benchmark (issue 6): the engine's live loader vs. the same steps on pre-made tensors.

loader_step_ratio = time per training step when `fit` reads patches from the cached `PatchDataset`
(foreground oversampling, no augmentation, 2 worker threads) / time per step on the same batches
already in memory. Goal <= 1.10. CPU only here: the GPU part of issue 6 (80x160x160, batch 2,
base 32, fp32 vs. mixed bf16 on KERAS_BACKEND=torch) needs a GPU session; not measured.

Usage: python bench/training.py [--quick]; ends with `loader_step_ratio: X`.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras

from miscnn_lite.loading import PreprocessedCache, patch_dataset_class
from miscnn_lite.losses import get_loss
from miscnn_lite.models import unet
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    steps, epochs = (8, 2) if args.quick else (20, 3)
    patch, base = ((32, 32, 32), 8) if args.quick else ((32, 64, 64), 8)
    with tempfile.TemporaryDirectory() as d:
        cases = [generate_phantom(s, shape=(48, 96, 96)) for s in range(6)]
        entries = PreprocessedCache(Path(d), Pipeline([ClipHU(-79, 304), ZScore("image")])).prepare(cases)
        ds = patch_dataset_class()(entries, patch, batch_size=2, iterations=steps, workers=2, seed=0)
        xs = np.concatenate([ds.batch(i)[0] for i in range(steps)])
        ys = np.concatenate([ds.batch(i)[1] for i in range(steps)])

        def model():
            m = unet(3, depth=3, base_filters=base)
            m.compile(keras.optimizers.Adam(1e-3), get_loss("dice_ce"))
            return m
        live, premade = model(), model()
        live.fit(ds, epochs=1, verbose=0)                                     # compile + warm-up
        premade.fit(xs, ys, batch_size=2, epochs=1, verbose=0, shuffle=False)
        t_live, t_pre = [], []
        for _ in range(epochs):                                                # interleaved, same load
            t = time.perf_counter(); live.fit(ds, epochs=1, verbose=0); t_live.append(time.perf_counter() - t)
            t = time.perf_counter(); premade.fit(xs, ys, batch_size=2, epochs=1, verbose=0, shuffle=False)
            t_pre.append(time.perf_counter() - t)
    live_ms, pre_ms = np.median(t_live) / steps * 1e3, np.median(t_pre) / steps * 1e3
    print(f"U-Net depth 3, base {base}, patch {patch}, batch 2, {keras.backend.backend()} backend, CPU")
    print(f"step with live loader: {live_ms:.0f} ms; on pre-made tensors: {pre_ms:.0f} ms")
    print(f"loader_step_ratio: {live_ms / pre_ms:.3f}")


if __name__ == "__main__":
    main()
