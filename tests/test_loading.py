"""Cache, loader and HDF5 pack on phantom files: staleness, corruption, bounds, workers, memory."""
import json
import os
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from miscnn_lite.io import load_case, save_case
from miscnn_lite.loading import (
    PatchBatches,
    PreprocessedCache,
    check_patch_shape,
    make_loader,
    open_hdf5,
    pack_hdf5,
    verify_npy,
)
from miscnn_lite.phantoms import make_phantom_dataset, toy_case
from miscnn_lite.preprocessing import ClipHU, Pipeline

SHAPE = (16, 48, 48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    make_phantom_dataset(root, n_cases=3, seed=0, shape=SHAPE, progress=False)
    return root


def folders(root):
    return sorted(p for p in Path(root).iterdir() if (p / "imaging.nii.gz").is_file())


def test_cache_matches_preprocessing_of_the_file(dataset, tmp_path):
    pipe = Pipeline([ClipHU(-79, 304)])
    entries = PreprocessedCache(tmp_path, pipe).prepare(folders(dataset))
    ref = pipe(load_case(folders(dataset)[1] / "imaging.nii.gz", folders(dataset)[1] / "segmentation.nii.gz"))
    np.testing.assert_array_equal(entries[1].image(), ref.image)
    np.testing.assert_array_equal(entries[1].label(), ref.label)
    locs = entries[1].class_locations()
    for c, pts in locs.items():
        assert (ref.label[tuple(pts.T)] == c).all()


def test_every_npy_header_parse_of_the_loader_holds_the_lock(dataset, tmp_path, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
    (python/cpython#106905); the loader's threads must parse under NPY_LOCK."""
    import ast

    from miscnn_lite.io import NPY_LOCK, NpzReader
    entries = PreprocessedCache(tmp_path / "cache", Pipeline([ClipHU(-79, 304)])).prepare(folders(dataset))
    case = load_case(folders(dataset)[0] / "imaging.nii.gz", folders(dataset)[0] / "segmentation.nii.gz")
    np.savez(tmp_path / "c1.npz", image=case.image, label=case.label, affine=case.affine)
    parses, literal_eval = [], ast.literal_eval

    def checked(text):
        assert NPY_LOCK.locked(), "an .npy header parsed without NPY_LOCK"
        parses.append(text)
        return literal_eval(text)
    monkeypatch.setattr(ast, "literal_eval", checked)
    entries[0].image(), entries[0].label(), entries[0].class_locations()
    reader = NpzReader(tmp_path)
    assert reader.has_label("c1") and reader.load_case("c1").shape == case.shape
    assert len(parses) >= 6                                   # image, label, locations, 3 arrays of the .npz
    batches = PatchBatches(entries, (8, 16, 16), batch_size=2, iterations=4, seed=0)
    assert batches[0][0].shape == (2, 8, 16, 16, 1)


def test_changed_source_file_is_rebuilt(dataset, tmp_path):
    data = tmp_path / "data"
    for f in folders(dataset):
        save_case(load_case(f / "imaging.nii.gz", f / "segmentation.nii.gz", case_id=f.name), data)
    cache = PreprocessedCache(tmp_path / "cache")
    cache.prepare(folders(data))
    case = load_case(folders(data)[0] / "imaging.nii.gz", folders(data)[0] / "segmentation.nii.gz",
                     case_id=folders(data)[0].name)
    case.image = case.image + 7
    save_case(case, data)
    again = PreprocessedCache(tmp_path / "cache")
    entries = again.prepare(folders(data))
    assert again.stats == {"built": 1, "reused": 2, "stale": 1, "corrupt": 0}
    np.testing.assert_array_equal(entries[0].image(), case.image)


def test_stat_fingerprint_also_sees_a_rewrite(dataset, tmp_path):
    cache = PreprocessedCache(tmp_path, fingerprint="stat")
    cache.prepare(folders(dataset))
    p = folders(dataset)[2] / "imaging.nii.gz"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = PreprocessedCache(tmp_path, fingerprint="stat")
    again.prepare(folders(dataset))
    assert again.stats["stale"] == 1
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_config_change_uses_another_folder_and_cache_stays_bounded(dataset, tmp_path):
    a = PreprocessedCache(tmp_path, Pipeline([ClipHU(-79, 304)]))
    b = PreprocessedCache(tmp_path, Pipeline([ClipHU(-100, 300)]))
    assert a.folder != b.folder
    entries = a.prepare(folders(dataset))
    loader = PatchBatches(entries, (16, 16, 16), batch_size=2, iterations=5)
    for _ in range(3):                          # many epochs, repeated prepares: no growth
        for i in range(len(loader)):
            loader[i]
        a.prepare(folders(dataset))
    files = sorted(p.name for p in a.folder.iterdir())
    assert len(files) == 4 * 3 + 1, files      # json, image, label, locations per case + config.json


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "bad_json", "drop_locations", "wrong_dtype"])
def test_corrupt_entry_is_rebuilt_never_read(dataset, tmp_path, damage, monkeypatch):
    cache = PreprocessedCache(tmp_path)
    entry = cache.prepare(folders(dataset))[0]
    expected = np.array(entry.image())
    if damage == "truncate":
        entry.image_path.write_bytes(entry.image_path.read_bytes()[:-100])
    elif damage == "garbage_header":
        raw = bytearray(entry.image_path.read_bytes()); raw[:20] = b"x" * 20
        entry.image_path.write_bytes(bytes(raw))
    elif damage == "bad_json":
        (cache.folder / f"{entry.case_id}.json").write_text("{not json")
    elif damage == "drop_locations":
        entry.locations_path.unlink()
    elif damage == "wrong_dtype":                # same byte count, other dtype: header differs
        arr = np.array(entry.image())
        np.save(entry.image_path, arr.view(np.uint16) if arr.dtype.itemsize == 2 else arr.view(np.float32))
    loaded = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda p, *a, **k: (loaded.append(Path(p)), real_load(p, *a, **k))[1])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = PreprocessedCache(tmp_path)
        new = again.entry(folders(dataset)[0])
    assert again.stats["corrupt"] == 1, again.stats
    assert any(entry.case_id in str(x.message) and "rebuilding" in str(x.message) for x in w)
    assert loaded == [], "a corrupt entry must not be read"          # nothing was np.load-ed while checking
    np.testing.assert_array_equal(new.image(), expected)


def test_full_verification_catches_a_flipped_data_byte(dataset, tmp_path):
    cache = PreprocessedCache(tmp_path, verify="full")
    entry = cache.prepare(folders(dataset))[0]
    raw = bytearray(entry.image_path.read_bytes()); raw[-3] ^= 0x55
    entry.image_path.write_bytes(bytes(raw))
    assert verify_npy(entry.image_path, entry.meta["image"]) is None          # cheap check passes...
    with pytest.warns(UserWarning, match="checksum"):
        PreprocessedCache(tmp_path, verify="full").entry(folders(dataset)[0])  # ...the full one rebuilds


def test_cache_folder_errors(tmp_path, monkeypatch):
    f = tmp_path / "file"; f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        PreprocessedCache(f)
    with pytest.raises(ValueError, match="not writable"):
        PreprocessedCache(f / "sub")
    def deny(self, data):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "write_bytes", deny)
    with pytest.raises(ValueError, match=r"not writable \(Permission denied\)"):
        PreprocessedCache(tmp_path / "ro")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            PreprocessedCache(ro)
    finally:
        ro.chmod(0o700)


def test_patch_shape_and_absent_class_errors(tmp_path):
    cases = [toy_case(s, tumor=False) for s in range(2)]
    entries = PreprocessedCache(tmp_path).prepare(cases)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] occur in none of the 2 cases"):
        PatchBatches(entries, (8, 8, 8), oversample_classes=(1, 2))
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 16"):
        check_patch_shape((24, 32, 32), 4)
    with pytest.raises(ValueError, match="not divisible"):
        make_loader(cases, (24, 32, 32), cache_dir=tmp_path, depth=4)


def test_threads_request_each_index_once_per_epoch(tmp_path):
    entries = PreprocessedCache(tmp_path).prepare([toy_case(s) for s in range(3)])
    b = PatchBatches(entries, (8, 8, 8), batch_size=1, iterations=4, seed=3)
    seen = []
    def worker(i):
        seen.append((i, b[i][0].tobytes()))
    threads = [threading.Thread(target=worker, args=(i % 4,)) for i in range(12)]   # 3 epochs, any order
    [t.start() for t in threads]; [t.join() for t in threads]
    expected = {(i, b.batch(i, e)[0].tobytes()) for i in range(4) for e in range(3)}
    assert set(seen) == expected


def test_multiprocessing_workers_feed_fit(tmp_path):
    import keras

    from miscnn_lite.loading import PatchDataset
    entries = PreprocessedCache(tmp_path).prepare([toy_case(s) for s in range(3)])
    ds = PatchDataset(entries, (16, 16, 16), batch_size=2, iterations=3, workers=2, use_multiprocessing=True)
    inp = keras.Input((None, None, None, 1))
    model = keras.Model(inp, keras.layers.Conv3D(3, 1, activation="softmax")(inp))
    model.compile("adam", "sparse_categorical_crossentropy")
    hist = model.fit(ds, epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"]).all()
    assert sum(ds._requests.counts[:]) >= 6          # children's requests are counted in shared memory


def test_hdf5_pack_round_trip_and_bad_file(dataset, tmp_path):
    entries = PreprocessedCache(tmp_path / "c").prepare(folders(dataset))
    pack = pack_hdf5(entries, tmp_path / "pack.h5")
    packed = open_hdf5(pack)
    assert [e.meta["source_hash"] for e in packed] == [e.meta["source_hash"] for e in entries]
    assert packed[0].meta["spacing"] == entries[0].meta["spacing"]
    a = PatchBatches(entries, (8, 16, 16), batch_size=2, iterations=3, seed=1)
    b = PatchBatches(packed, (8, 16, 16), batch_size=2, iterations=3, seed=1)
    for i in range(3):
        np.testing.assert_array_equal(a.batch(i)[0], b.batch(i)[0])
    # each patch reads its box (a 2.5D slab: its slices), never the whole volume; the same batches as the cache
    from miscnn_lite import loading
    from miscnn_lite.patching import PatchSampler
    reads, real_read = [], loading._H5Array._read
    def counted(self, key):
        box = real_read(self, key)
        reads.append(box.size / np.prod(self.dataset.shape))
        return box
    loading._H5Array._read = counted
    try:
        for sampler in (None, PatchSampler((1, 16, 16), slab_neighbours=2)):
            kw = {} if sampler is None else {"sampler": sampler}
            shape = (8, 16, 16) if sampler is None else (1, 16, 16)
            a = PatchBatches(entries, shape, batch_size=2, iterations=3, seed=2, **kw)
            b = PatchBatches(packed, shape, batch_size=2, iterations=3, seed=2, **kw)
            for i in range(3):
                for x, y in zip(a.batch(i), b.batch(i)):
                    np.testing.assert_array_equal(x, y)
    finally:
        loading._H5Array._read = real_read
    assert reads and max(reads) < 0.5, max(reads)
    cut = tmp_path / "cut.h5"; cut.write_bytes(pack.read_bytes()[:2000])
    with pytest.raises(ValueError, match="cannot be read as HDF5"):
        open_hdf5(cut)


def _peak_bytes(n_cases, root):
    entries = PreprocessedCache(root).prepare([toy_case(s, shape=(32, 64, 64)) for s in range(n_cases)])
    loader = PatchBatches(entries, (16, 32, 32), batch_size=2, iterations=20, seed=0)
    tracemalloc.start()
    for i in range(len(loader)):
        loader[i]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_flat_with_dataset_size(tmp_path):
    small, large = _peak_bytes(5, tmp_path / "a"), _peak_bytes(20, tmp_path / "b")
    volume = 32 * 64 * 64 * 2
    assert large <= 1.2 * small + 64_000, (small, large)
    assert large < 2 * volume, "an epoch must not hold whole volumes"


def test_a_picture_folders_spacing_and_colours_are_part_of_its_fingerprint(tmp_path):
    "Fixing a picture folder's spacing or colour table must not reuse the cache built under the old ones."
    from miscnn_lite.io import ImageFolderReader
    from miscnn_lite.loading import dataset_items, item_fingerprint
    from miscnn_lite.phantoms import make_picture_dataset
    root = make_picture_dataset(tmp_path / "pics", n_cases=1, shape=(8, 48, 48))
    base = ImageFolderReader(root)
    keys = list(base.colors)                                       # two classes' colours exchanged
    swapped = {**base.colors, keys[1]: base.colors[keys[2]], keys[2]: base.colors[keys[1]]}
    prints = [item_fingerprint(dataset_items(r)[0]) for r in
              (base, ImageFolderReader(root), ImageFolderReader(root, spacing=(2.0, 2.0)),
               ImageFolderReader(root, colors=swapped))]
    assert prints[0] == prints[1] and len(set(prints)) == 3, prints


def test_a_loader_refuses_a_cache_rebuilt_under_it_by_another_dataset(tmp_path):
    "Two datasets with a case of the same id prepared into one cache folder: the first loader does not switch data."
    from dataclasses import replace as dc_replace

    from miscnn_lite.io import MiscnnError
    a = toy_case(0)
    b = dc_replace(a, image=np.asarray(a.image) + 100)           # same id, other content
    first = PreprocessedCache(tmp_path).prepare([a])
    before = np.array(first[0].image())
    again = PreprocessedCache(tmp_path).prepare([a])              # the same data: nothing rebuilt, still valid
    np.testing.assert_array_equal(np.array(again[0].image()), before)
    np.testing.assert_array_equal(np.array(first[0].image()), before)
    PreprocessedCache(tmp_path).prepare([b])
    with pytest.raises(MiscnnError, match="was rebuilt since this loader was made.*own cache_dir"):
        first[0].image()
    relabelled = dc_replace(a, label=np.where(np.asarray(a.label) == 2, 1, np.asarray(a.label)).astype(np.uint8))
    second = PreprocessedCache(tmp_path / "d").prepare([a])      # the same image, another label map
    PreprocessedCache(tmp_path / "d").prepare([relabelled])
    for read in (second[0].label, second[0].class_locations, second[0].image):
        with pytest.raises(MiscnnError, match="was rebuilt since this loader was made"):
            read()


def test_slice_sampler_and_a_direct_patch_sampler_call_read_an_hdf5_pack(tmp_path):
    "Samplers that scan the label (no locations given) get arrays; only sample_patch's PatchSampler slices lazily."
    from miscnn_lite.loading import open_hdf5, pack_hdf5, sample_patch
    from miscnn_lite.patching import PatchSampler
    entries = PreprocessedCache(tmp_path / "c").prepare([toy_case(0)])
    packed = open_hdf5(pack_hdf5(entries, tmp_path / "pack.h5"))[0]
    rng = lambda: np.random.default_rng(4)   # noqa: E731
    a = PatchSampler((8, 16, 16))(packed.image(), packed.label(), rng())
    b = PatchSampler((8, 16, 16))(entries[0].image(), entries[0].label(), rng())
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    try:
        from miscnn_lite.patching import SliceSampler
    except ImportError:
        return
    for x, y in zip(sample_patch(SliceSampler(2), packed, rng()), sample_patch(SliceSampler(2), entries[0], rng())):
        np.testing.assert_array_equal(x, y)


def test_loader_arguments_are_checked_by_name_and_a_copy_paste_without_donors_says_so(tmp_path):
    from miscnn_lite.io import MiscnnError, case_from_arrays
    from miscnn_lite.loading import CopyPaste, PatchBatches, PreprocessedCache, patch_dataset_class
    from miscnn_lite.patching import PatchSampler

    def case(cid, seed):
        label = np.zeros((8, 12, 12), np.uint8)
        label[2:6, 3:8, 3:8], label[3:5, 4:6, 4:6] = 1, 2
        return case_from_arrays(np.random.default_rng(seed).normal(size=(8, 12, 12)).astype(np.float32), label,
                                case_id=cid)
    entries = PreprocessedCache(tmp_path / "cache").prepare([case("a", 0), case("b", 1)])
    for kwargs, words in [(dict(patch_shape=8), r"patch_shape=8: give 3 whole numbers"),
                          (dict(patch_shape=(4, 4)), r"patch_shape=\(4, 4\)"),
                          (dict(oversample_classes=2), "oversample_classes=2: give a list of class labels"),
                          (dict(fixed="no"), "fixed='no': give True"),
                          (dict(sampler=PatchSampler((2, 2, 2))), r"sampler draws \(2, 2, 2\) patches, patch_shape is "
                                                                  r"\(4, 4, 4\)")]:
        with pytest.raises(MiscnnError, match=words):
            PatchBatches(entries, **{"patch_shape": (4, 4, 4), **kwargs})
    for targets in (0, -1, 2.7):
        with pytest.raises(MiscnnError, match=f"targets={targets!r}: the number of model outputs"):
            patch_dataset_class()(entries, (4, 4, 4), targets=targets)
    for paste, words in [(CopyPaste(1.0, 2, 5), "holds into 5"), (CopyPaste(1.0, 7, 1), "holds label 7")]:
        with pytest.warns(UserWarning, match=rf"copy_paste: no case of these 2 {words} \(classes found: \[1, 2\]\)"):
            PatchBatches(entries, (4, 4, 4), copy_paste=paste)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # donors and hosts present: no word
        PatchBatches(entries, (4, 4, 4), copy_paste=CopyPaste(1.0, 2, 1))
    with pytest.raises(MiscnnError, match="case id 'config': its cache file would be .*config.json, the cache folder"):
        PreprocessedCache(tmp_path / "cache").prepare([case("config", 2)])
    assert json.loads(next((tmp_path / "cache").glob("*/config.json")).read_text())["seed"] == 0   # kept
