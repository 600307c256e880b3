"""Redraw time of SliceViewer on a 512×512 CT-like volume, against a matplotlib imshow+savefig redraw.

Goal (issue 9): one redraw of a 512×512 slice (render + PNG encode + widget update) ≤ 50 ms.
Run: .venv/bin/python bench/viewer.py [--depth 40] [--repeats 30]
Ends with `name: value` lines.
"""
import argparse
import os
import time
from io import BytesIO
from statistics import median

os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np

from miscnn_lite.cli import _positive_int  # a count >= 1, as the CLI parses it
from miscnn_lite.phantoms import generate_phantom
from miscnn_lite.visualization import SliceViewer, overlay_labels, window_to_uint8


def time_redraws(viewer, widget, values, repeats, cpu=None):
    """Median wall time (ms) of setting `widget.value` (one redraw each) to `repeats` new values.

    The median CPU time of this thread is appended to `cpu` (less sensitive to other processes)."""
    times, cpu_times, k = [], [], 0
    while len(times) < repeats:
        v = values[k % len(values)]
        k += 1
        if widget.value == v:
            continue
        n = viewer.n_redraws
        t0, c0 = time.perf_counter(), time.thread_time()
        widget.value = v
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.thread_time() - c0) * 1e3)
        assert viewer.n_redraws == n + 1, "a value change must trigger exactly one redraw"
    if cpu is not None:
        cpu.append(median(cpu_times))
    return median(times)


def matplotlib_redraw_ms(image2d, label2d, repeats):
    "The classic notebook viewer: imshow grey + masked label overlay + savefig PNG, per slice."
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.12, 5.12), dpi=100)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ax.clear()
        ax.imshow(image2d, cmap="gray", vmin=-160, vmax=240)
        ax.imshow(np.ma.masked_equal(label2d, 0), cmap="tab10", alpha=0.4, vmin=0, vmax=9)
        ax.axis("off")
        fig.savefig(BytesIO(), format="png")
        times.append((time.perf_counter() - t0) * 1e3)
    plt.close(fig)
    return median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=_positive_int, default=40)
    ap.add_argument("--repeats", type=_positive_int, default=30)
    args = ap.parse_args()
    t0 = time.perf_counter()
    case = generate_phantom(seed=0, shape=(args.depth, 512, 512), spacing=(3.0, 0.8, 0.8))
    print(f"phantom {case.shape} generated in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    prediction = np.roll(case.label, 3, axis=2)
    viewer = SliceViewer(case, prediction=prediction, size=512)
    fg = np.flatnonzero(case.label.any((1, 2)))
    slices = rng.permutation(np.arange(fg[0], fg[-1] + 1)).tolist()
    r = args.repeats
    results = {}
    viewer.view_buttons.value = "truth"
    cpu = []
    results["redraw_axial_overlay_ms"] = time_redraws(viewer, viewer.slice_slider, slices, r, cpu)
    results["redraw_axial_overlay_cpu_ms"] = cpu[-1]
    viewer.view_buttons.value = "image"
    results["redraw_axial_grey_ms"] = time_redraws(viewer, viewer.slice_slider, slices, r)
    viewer.view_buttons.value = "errors"
    results["redraw_axial_errors_ms"] = time_redraws(viewer, viewer.slice_slider, slices, r)
    viewer.view_buttons.value = "truth | prediction"
    results["redraw_side_by_side_ms"] = time_redraws(viewer, viewer.slice_slider, slices, r)
    viewer.view_buttons.value = "truth"
    widths = [400.0 + 10 * k for k in range(1, r + 2)]
    results["redraw_window_change_ms"] = time_redraws(viewer, viewer.width_slider, widths, r)
    viewer.axis_buttons.value = 1
    rows = rng.permutation(np.arange(100, 400)).tolist()
    results["redraw_coronal_overlay_ms"] = time_redraws(viewer, viewer.slice_slider, rows, r)
    viewer.axis_buttons.value = 0
    z = int(fg[len(fg) // 2])
    results["matplotlib_redraw_ms"] = matplotlib_redraw_ms(case.image[z], case.label[z], max(5, r // 3))
    # the rendering alone (no PNG): where the time goes
    t0 = time.perf_counter()
    for k in range(r):
        overlay_labels(window_to_uint8(case.image[slices[k % len(slices)]], 40, 400),
                       case.label[slices[k % len(slices)]])
    results["render_only_axial_overlay_ms"] = (time.perf_counter() - t0) * 1e3 / r
    worst = max(v for k, v in results.items() if k.startswith("redraw_") and "side_by_side" not in k
                and not k.endswith("cpu_ms"))
    results["speedup_vs_matplotlib"] = results["matplotlib_redraw_ms"] / results["redraw_axial_overlay_ms"]
    results["goal_ms"] = 50.0
    results["single_slice_redraws_within_goal"] = float(worst <= 50.0)
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    for k, v in results.items():
        print(f"{k}: {v:.2f}")


if __name__ == "__main__":
    main()
