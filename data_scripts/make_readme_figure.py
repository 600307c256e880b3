"""Write docs/phantom.png, the README picture: one synthetic KiTS-like phantom, axial and coronal
slices through its tumor, labels overlaid (kidney green, tumor red).

    python data_scripts/make_readme_figure.py [--seed 0] [--out docs/phantom.png]
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from miscnn_lite.io import atomic_path
from miscnn_lite.phantoms import generate_phantom

WINDOW_HU = (-160, 240)                       # abdominal soft-tissue window
COLORS = {1: (0.1, 0.9, 0.2), 2: (1.0, 0.15, 0.1)}   # kidney, tumor


def overlay(image_hu: np.ndarray, label: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    "(H, W) HU slice and label slice -> (H, W, 3) RGB in [0, 1]: windowed gray with tinted classes."
    gray = np.clip((image_hu - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0]), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for value, color in COLORS.items():
        mask = label == value
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(color)
    return rgb


def _fail(message: str):
    "Print one line naming the option and stop with status 2, as the command-line tools do."
    print(f"make_readme_figure: error: {message}", file=sys.stderr)
    raise SystemExit(2)


FORMAT_OPTIONS = {".png": {"metadata": {"Software": None}},   # no matplotlib version inside: the same bytes again
                  ".pdf": {"metadata": {"Creator": None, "Producer": None, "CreationDate": None}},
                  ".svg": {"metadata": {"Creator": None, "Date": None}}}


def main(seed: int = 0, out: Path = Path("docs/phantom.png")) -> Path:
    if Path(out).suffix.lower() not in FORMAT_OPTIONS:
        _fail(f"--out {out}: name the file with one of {', '.join(FORMAT_OPTIONS)}, e.g. docs/phantom.png.")
    if seed < 0:
        _fail(f"--seed {seed}: must be >= 0.")
    case = generate_phantom(seed, tumor_probability=1.0)
    image, label = case.image.astype(np.float32), case.label
    z = int(np.argmax((label == 2).sum((1, 2))))
    y = int(np.argmax((label == 2).sum((0, 2))))
    sz, sy, sx = case.spacing
    fig, axs = plt.subplots(1, 3, figsize=(11, 3.9), gridspec_kw=dict(width_ratios=[1, 1, 1]))
    axs[0].imshow(image[z], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=sy / sx)
    axs[0].set_title(f"CT phantom, axial slice {z} (HU window {WINDOW_HU[0]}…{WINDOW_HU[1]})", fontsize=9)
    axs[1].imshow(overlay(image[z], label[z]), aspect=sy / sx)
    for value, color in COLORS.items():
        if (label[z] == value).any():
            axs[1].contour(label[z] == value, levels=[0.5], colors=[color], linewidths=0.8)
    axs[1].set_title("labels: kidney (green), tumor (red)", fontsize=9)
    axs[2].imshow(overlay(image[::-1, y], label[::-1, y]), aspect=sz / sx)   # superior at the top
    axs[2].set_title(f"coronal slice {y}, spacing {sz:g}×{sy:g}×{sx:g} mm", fontsize=9)
    for ax in axs:
        ax.axis("off")
    fig.suptitle(f"miscnn_lite.phantoms.generate_phantom(seed={seed}): shape {case.shape}", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:                 # the format from --out's suffix, not from the temporary name
        fig.savefig(tmp, dpi=110, format=out.suffix[1:].lower(), **FORMAT_OPTIONS[out.suffix.lower()])
    plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/phantom.png"))
    args = parser.parse_args()
    print(f"wrote {main(args.seed, args.out)}")
