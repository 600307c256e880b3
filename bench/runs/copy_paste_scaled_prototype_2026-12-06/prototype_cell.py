# PROTOTYPE (scratch copy, not the shipped notebook): copy-paste with the pasted tumor shrunk in-plane by a factor
# drawn from [SCALE_LO, 1] (TumorCP's object-level scaling, aimed at the small tumors the network misses)
import os

import numpy as np

from miscnn_lite.loading import CopyPaste

SCALE_LO = float(os.environ.get("CP_SCALE_LO", "0.5"))
def _scaled_call(self, image, label, host, entries, rng, slab_neighbours: int = 0, cache: dict | None = None):
    """`(image (d, h, w, C'), label (d, h, w))` of case `entries[host]`, with a lesion pasted (copies) or as
    given. `cache`: a dict kept by the caller for the donors and levels (found once per loader)."""
    if label is None or rng.random() >= self.p:
        return image, label
    cache = {} if cache is None else cache
    if "donors" not in cache:
        cache["donors"] = self.donors(entries)
    flat, k = label.shape[0] == 1, int(slab_neighbours)
    where = np.argwhere((label[0] if flat else label) == self.into)
    donors = [d for d in cache["donors"] if d[0] != host]
    if not len(where) or not donors:
        return image, label
    i, corner, mask = donors[rng.integers(len(donors))]
    source = entries[i].image()
    if flat:                                   # one slice of the component and its slab's neighbours
        z = int(rng.integers(mask.shape[0]))
        zc = np.arange(z - k, z + k + 1)
        inside = (zc >= 0) & (zc < mask.shape[0])
        piece = np.zeros((2 * k + 1, *mask.shape[1:]), bool)
        piece[inside] = mask[zc[inside]]
        rows = np.clip(zc + corner[0], 0, source.shape[0] - 1)
    else:
        piece, rows = mask, np.arange(corner[0], corner[0] + mask.shape[0])
    values = np.asarray(source[rows][:, corner[1]:corner[1] + mask.shape[1], corner[2]:corner[2] + mask.shape[2]])
    values = values[..., None] if values.ndim == 3 else values
    if rng.random() < 0.5:
        piece, values = piece[:, ::-1], values[:, ::-1]
    if rng.random() < 0.5:
        piece, values = piece[:, :, ::-1], values[:, :, ::-1]
    turns = int(rng.integers(4))
    piece, values = np.rot90(piece, turns, axes=(1, 2)), np.rot90(values, turns, axes=(1, 2))
    factor = float(rng.uniform(SCALE_LO, 1.0))            # PROTOTYPE: shrink the lesion in-plane
    if factor < 1.0:
        from scipy import ndimage as _ndi
        piece = _ndi.zoom(piece.astype(np.float32), (1, factor, factor), order=1) > 0.5
        values = _ndi.zoom(np.ascontiguousarray(values, np.float32), (1, factor, factor, 1), order=1)
    centre = where[rng.integers(len(where))]
    size = piece.shape[1:] if flat else piece.shape
    lo = np.asarray(centre) - np.asarray(size) // 2
    start, stop = np.maximum(lo, 0), np.minimum(lo + size, label.shape[1:] if flat else label.shape)
    crop = tuple(slice(a - b, c - b) for a, b, c in zip(start, lo, stop))
    at = tuple(slice(a, c) for a, c in zip(start, stop))
    piece, values = piece[(slice(None), *crop) if flat else crop], values[(slice(None), *crop) if flat else crop]
    if self.keep_contrast:
        levels = cache.setdefault("levels", {})
        for j in (host, i):
            if j not in levels:
                levels[j] = self.level(entries[j])
        if levels[host] is not None and levels[i] is not None:
            values = values + (levels[host] - levels[i]).astype(values.dtype)
    image, label = image.copy(), label.copy()
    if flat:
        channels = values.shape[-1]
        for j in range(2 * k + 1):
            region = image[(0, *at, slice(j * channels, (j + 1) * channels))]
            region[piece[j]] = values[j][piece[j]]
        label[(0, *at)][piece[k]] = self.label
    else:
        image[at][piece] = values[piece]
        label[at][piece] = self.label
    return image, label


CopyPaste.__call__ = _scaled_call
print(f"PROTOTYPE copy-paste with in-plane scale [{SCALE_LO}, 1]")
