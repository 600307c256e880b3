"""Loader benchmarks (issue 5), measured side by side in one run on CPU.

1. cached_patch_speedup: one random 3D patch read from the preprocessed .npy cache (memory map)
   vs. loading the .nii.gz, preprocessing it and cutting the same patch. Goal >= 100x.
2. input_wait_fraction: a tiny model's `fit` fed by the loader with CT augmentation and 2 worker
   threads vs. the same number of steps on pre-made tensors: 1 - t_premade / t_loader. Goal <= 0.10.
3. rss_ratio_20_vs_5: peak RSS of a fresh process running one epoch over 20 vs. 5 cached phantom cases.
   Goal <= 1.2.

Each figure is measured side by side: the two sides alternate within rounds, and a figure is the median of the
rounds' ratios (the RSS peaks: medians of three fresh processes each, in alternating order).

Usage: python bench/loading.py [--quick]; ends with one `name: value` line per figure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np

from miscnn_lite.io import load_case, save_case
from miscnn_lite.loading import PreprocessedCache, sample_patch
from miscnn_lite.patching import PatchSampler
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.preprocessing import ClipHU, Pipeline, ZScore


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return float(np.median(times))


def cached_patch_speedup(tmp, shape, patch, repeat):
    folder = save_case(generate_phantom(0, shape=shape), tmp / "data").parent
    pipe = Pipeline([ClipHU(-79, 304), ZScore("image")])
    sampler = PatchSampler(patch, foreground_fraction=1 / 3)
    entry = PreprocessedCache(tmp / "cache", pipe).prepare([folder])[0]
    rng = np.random.default_rng(0)

    def from_nifti():
        case = pipe(load_case(folder / "imaging.nii.gz", folder / "segmentation.nii.gz"))
        sampler(case.image, case.label, rng)

    def from_cache():
        sample_patch(sampler, entry, rng)
    rounds = max(3, repeat // 20)                 # side by side: per round one NIfTI read and its share of cache reads
    times = [(median_time(from_nifti, 1), median_time(from_cache, max(1, repeat // rounds))) for _ in range(rounds)]
    return (float(np.median([a for a, _ in times])), float(np.median([b for _, b in times])),
            float(np.median([a / b for a, b in times])))


def input_wait_fraction(tmp, steps, rounds):
    import keras

    from miscnn_lite.augmentation import ct_augmentation
    from miscnn_lite.loading import PatchDataset
    from miscnn_lite.models import unet
    cases = [generate_phantom(s, shape=(32, 64, 64)) for s in range(4)]
    pipe = Pipeline([ClipHU(-79, 304), ZScore("image")])
    entries = PreprocessedCache(tmp / "cache2", pipe).prepare(cases)
    ds = PatchDataset(entries, (32, 32, 32), batch_size=2, iterations=steps, workers=2,
                      augmentation=ct_augmentation(3), seed=0)
    xs = np.concatenate([ds.batch(i)[0] for i in range(steps)])
    ys = np.concatenate([ds.batch(i)[1] for i in range(steps)])

    def model():
        m = unet(3, depth=3, base_filters=8)
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return m
    m1, m2 = model(), model()
    fits = {"loader": lambda: m1.fit(ds, epochs=1, verbose=0),
            "premade": lambda: m2.fit(xs, ys, batch_size=2, epochs=1, verbose=0, shuffle=False)}
    for fit in fits.values():                    # warm-up: tracing
        fit()
    times = {name: [] for name in fits}
    for r in range(rounds):                      # side by side: one epoch of each per round, first one alternating
        for name in (("loader", "premade") if r % 2 == 0 else ("premade", "loader")):
            t = time.perf_counter(); fits[name](); times[name].append((time.perf_counter() - t) / steps)
    fractions = [max(0.0, 1 - p / t) for t, p in zip(times["loader"], times["premade"])]
    return float(np.median(times["loader"])), float(np.median(times["premade"])), float(np.median(fractions))


EPOCH_SCRIPT = """
import json, sys
from pathlib import Path
from miscnn_lite.loading import PreprocessedCache, PatchBatches
def status(key):   # VmHWM (peak RSS) is reset by exec, unlike getrusage's ru_maxrss, which keeps the parent's
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
root, n = sys.argv[1], int(sys.argv[2])
entries = PreprocessedCache(root).prepare(sorted(Path(sys.argv[3]).iterdir())[:n])
before = status("VmRSS:")
loader = PatchBatches(entries, (32, 64, 64), batch_size=2, iterations=int(sys.argv[4]), seed=0)
for i in range(len(loader)):
    loader[i]
print(json.dumps({"before_kb": before, "peak_kb": status("VmHWM:")}))
"""


def rss_ratio(tmp, shape, iterations):
    data = tmp / "rss_data"
    for s in range(20):
        save_case(generate_phantom(100 + s, shape=shape), data)
    cache = tmp / "rss_cache"
    PreprocessedCache(cache).prepare(sorted(data.iterdir()))           # build once, outside the measurement
    runs = {5: [], 20: []}
    for order in ((5, 20), (20, 5), (5, 20)):   # three fresh processes each, in alternating order; medians
        for n in order:
            res = subprocess.run([sys.executable, "-c", EPOCH_SCRIPT, str(cache), str(n), str(data), str(iterations)],
                                 capture_output=True, text=True, check=True)
            runs[n].append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {n: {k: float(np.median([r[k] for r in rs])) for k in ("before_kb", "peak_kb")} for n, rs in runs.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller volumes and fewer repeats")
    ap.add_argument("--parts", default="speedup,wait,rss", help="comma-separated subset of speedup,wait,rss")
    args = ap.parse_args()
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - {"speedup", "wait", "rss"}):
        ap.error(f"--parts: {', '.join(unknown)} unknown; choose among speedup, wait, rss (comma-separated)")
    shape = (48, 128, 128) if args.quick else (96, 256, 256)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "speedup" in parts:
            t_nii, t_cache, speedup = cached_patch_speedup(tmp, shape, (32, 64, 64), 100 if args.quick else 300)
            print(f"patch via .nii.gz + preprocessing: {t_nii * 1e3:.1f} ms; via cache: {t_cache * 1e3:.3f} ms "
                  f"(volume {shape}, patch 32x64x64)")
        if "wait" in parts:
            t_loader, t_premade, wait = input_wait_fraction(tmp, steps=10 if args.quick else 20,
                                                            rounds=3 if args.quick else 5)
            print(f"fit step with loader + CT augmentation (2 threads): {t_loader * 1e3:.0f} ms; "
                  f"pre-made tensors: {t_premade * 1e3:.0f} ms")
        if "rss" in parts:
            rss = rss_ratio(tmp, shape, 20 if args.quick else 50)
            for n, r in rss.items():
                print(f"{n:2d} cases: RSS before the epoch {r['before_kb'] / 1024:.0f} MiB, "
                      f"peak {r['peak_kb'] / 1024:.0f} MiB")
            vol_mib = np.prod(shape) * 2 / 2**20
            print(f"(one cached volume is {vol_mib:.0f} MiB int16; 20 volumes would be {20 * vol_mib:.0f} MiB)")
    if "speedup" in parts:
        print(f"cached_patch_speedup: {speedup:.1f}")
    if "wait" in parts:
        print(f"input_wait_fraction: {wait:.3f}")
    if "rss" in parts:
        print(f"rss_ratio_20_vs_5: {rss[20]['peak_kb'] / rss[5]['peak_kb']:.3f}")

if __name__ == "__main__":
    main()
