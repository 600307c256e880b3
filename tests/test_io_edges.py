"""Edge cases of miscnn_lite.io and miscnn_lite.patching that a review found giving wrong results or unclear
errors: label remaps with negative values, mixed-case NIfTI names, grids that share axes but not voxels, a stale
output lock taken over by two processes at once, and out-of-range inputs named clearly."""
import json
import os
import socket
import threading
import time
import warnings

import nibabel as nib
import numpy as np
import pytest

import miscnn_lite.io as io
from miscnn_lite.io import (
    CorruptFileError,
    DataError,
    MiscnnError,
    affine_from_spacing,
    case_from_arrays,
    describe_file,
    load_case,
    load_nifti,
    load_prediction,
    regrid,
    save_nifti,
    save_prediction,
    write_dicom_series,
    write_picture,
)
from miscnn_lite.patching import PatchAccumulator, PatchSampler, class_locations


def test_label_map_remaps_negative_values_without_touching_other_classes():
    image = np.zeros((2, 2, 3), np.int16)
    label = np.array([-1, 0, 1, 1, 0, -1] * 2).reshape(2, 2, 3)
    assert case_from_arrays(image, label, label_map={0: 0, 1: 1, -1: 0}).label[0].ravel().tolist() == [0, 0, 1, 1, 0, 0]
    assert case_from_arrays(image, label, label_map={-1: 2, 0: 0, 1: 1}).label[0].ravel().tolist() == [2, 0, 1, 1, 0, 2]
    with pytest.raises(DataError, match=r"label values \[-1\] are missing from label_map"):
        case_from_arrays(image, label, label_map={0: 0, 1: 1})


def test_mixed_case_nifti_names_are_refused_on_writing_and_on_reading(tmp_path):
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    with pytest.raises(DataError, match=r"c\.Nii\.gz: nibabel reads NIfTI names ending in \.nii\.gz or \.NII\.GZ "
                                        r"only; name it c\.nii\.gz"):
        save_nifti(tmp_path / "c.Nii.gz", volume, np.eye(4))            # it could not be read back
    assert not list(tmp_path.iterdir())                                  # nothing written, no temporary left
    gz = tmp_path / "c.nii.gz"
    save_nifti(gz, volume, np.eye(4))
    mixed = gz.rename(tmp_path / "c.Nii.gz")                             # renamed by hand
    with pytest.raises(DataError, match=r"name it c\.nii\.gz"):
        load_nifti(mixed)
    upper = save_nifti(tmp_path / "D.NII.GZ", volume, np.eye(4))
    np.testing.assert_array_equal(load_nifti(upper)[0], volume)
    np.testing.assert_array_equal(load_nifti(save_nifti(tmp_path / "e.nii.GZ", volume, np.eye(4)))[0], volume)


def test_empty_and_non_nifti_files_are_called_corrupt_not_misnamed(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        load_nifti(tmp_path / "empty.nii.gz")
    (tmp_path / "page.nii.gz").write_text("<html>not found</html>")
    with pytest.raises(CorruptFileError, match="corrupt or truncated"):
        load_nifti(tmp_path / "page.nii.gz")


def test_regrid_refuses_grids_with_the_same_axes_but_other_voxels():
    a = np.arange(24).reshape(2, 3, 4)
    src = affine_from_spacing((1, 1, 1))
    shifted = src.copy()
    shifted[:3, 3] += [50, 0, 0]
    assert regrid(a, src, shifted) is None
    assert regrid(a, src, src @ np.diag([1, 1, -1, 1])) is None               # flipped about voxel 0, not the far edge
    flipped = src @ np.diag([1, 1, -1, 1])
    flipped[:3, 3] = src[:3, :3] @ [0, 0, 3] + src[:3, 3]                     # flipped about the far edge: same voxels
    np.testing.assert_array_equal(regrid(a, src, flipped), a[:, :, ::-1])


def test_a_prediction_of_another_case_is_refused(tmp_path):
    image = np.zeros((4, 5, 6), np.int16)
    case = case_from_arrays(image, affine=affine_from_spacing((2, 1, 1)), case_id="a")
    case.original_affine = case.affine.copy()
    other = case_from_arrays(image, affine=affine_from_spacing((2, 1, 1), origin=(0, 0, 40)), case_id="b")
    other.original_affine = other.affine.copy()
    path = save_prediction(np.ones(other.shape, np.uint8), other, tmp_path / "b.nii.gz")
    with pytest.raises(DataError, match="written for another case"):
        load_prediction(path, case)
    np.testing.assert_array_equal(load_prediction(path, other), 1)


def test_describe_file_does_not_list_every_intensity_of_a_padded_ct(tmp_path):
    ct = np.random.default_rng(0).integers(-1024, 3072, (8, 8, 8)).astype(np.int16)
    ct[0] = -32768
    save_nifti(tmp_path / "ct.nii.gz", ct, np.eye(4))
    with np.errstate(over="raise"):
        assert "values" not in describe_file(tmp_path / "ct.nii.gz")


def test_spacing_orientation_and_npz_geometry_are_checked_by_name(tmp_path):
    with pytest.raises(DataError, match="has 2 values; expected 3"):
        case_from_arrays(np.zeros((2, 3, 4)), spacing=(0.8, 0.8))
    with pytest.raises(DataError, match="has 4 values"):
        affine_from_spacing((1, 2, 3, 4))
    with pytest.raises(io.SettingsError, match="orientation='RRS'"):
        affine_from_spacing((1, 2, 3), "RRS")
    np.testing.assert_array_equal(affine_from_spacing((1, 2, 3), "spl"), affine_from_spacing((1, 2, 3), "SPL"))
    (tmp_path / "npz").mkdir()
    np.savez(tmp_path / "npz" / "a.npz", image=np.zeros((2, 3, 4)), spacing=[0.8, 0.8])
    np.savez(tmp_path / "npz" / "b.npz", image=np.zeros((2, 3, 4)), affine=np.diag([2.0, 1, 1, 1]), spacing=[0, 0, 0])
    reader = io.NpzReader(tmp_path / "npz", orientation=None)
    with pytest.raises(DataError, match=r"a\.npz: spacing .* has 2 values"):
        reader.load_case("a")
    assert reader.load_case("b").spacing == pytest.approx((2.0, 1.0, 1.0))     # the stored affine wins


def test_default_case_id_keeps_the_dots_of_uid_names(tmp_path):
    for uid in ("1.2.840.113619.2.55", "1.2.840.113619.2.56"):
        save_nifti(tmp_path / f"{uid}.nii.gz", np.zeros((2, 3, 4), np.int16), np.eye(4))
        assert load_case(tmp_path / f"{uid}.nii.gz").id == uid


def test_pictures_and_dicom_refuse_what_their_format_cannot_hold(tmp_path):
    with pytest.raises(DataError, match=r"\.bmp holds 8-bit pictures"):
        write_picture(tmp_path / "p.bmp", np.zeros((4, 4), np.uint16))
    assert write_picture(tmp_path / "p.png", np.full((4, 4), 40000, np.uint16)).is_file()
    with pytest.raises(DataError, match="do not fit int16"):
        write_dicom_series(np.full((2, 4, 4), 40000), tmp_path / "dcm")
    with pytest.raises(DataError, match="fractional values"):
        write_dicom_series(np.full((2, 4, 4), 0.7), tmp_path / "dcm")
    assert not (tmp_path / "dcm").exists()


def test_float16_is_stored_as_float32(tmp_path):
    half = np.array([[[0.5, 1.25]]], np.float16)
    array, _ = load_nifti(save_nifti(tmp_path / "h.nii.gz", half, np.eye(4)))
    assert array.dtype == np.float32 and array.tolist() == [[[0.5, 1.25]]]


def test_a_long_file_name_is_written(tmp_path):
    name = "c" * 243 + ".nii.gz"
    assert save_nifti(tmp_path / name, np.zeros((2, 2, 2), np.int16), np.eye(4)).name == name


@pytest.mark.parametrize("flock", [True, False])
@pytest.mark.parametrize("third", [False, True])
def test_a_stale_lock_taken_over_by_two_processes_lets_only_one_in(tmp_path, monkeypatch, third, flock):
    """A judged the lock stale, B took it over since: A must not remove B's lock. With `third`, C asks while A acts
    on its old judgement (the first lock file A reads after B took over): only B is ever in. Without `flock`: the
    takeover file of file systems without flock on folders."""
    if not flock:
        monkeypatch.setattr(io, "_folder_flock", lambda folder: None)
    lock = tmp_path / io.LOCK_FILE
    lock.write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "command": "old", "started": "x"}))
    alive, read, b_holds, inside, refused, c_asked = io._lock_holder_alive, io._read_lock, threading.Event(), [], [], []

    def run(name):
        try:
            with io.output_lock(tmp_path, name):
                inside.append(name)
                if name == "B":
                    b_holds.set()
                    time.sleep(1.0)
        except io.OutputLockedError:
            refused.append(name)

    def judged_late(holder, path):                      # A is paused right after reading the stale holder
        if threading.current_thread().name == "A":
            b_holds.wait(5)
        return alive(holder, path)

    def c_asks_meanwhile(path):
        if threading.current_thread().name == "A" and b_holds.is_set() and not c_asked:
            c_asked.append(True)
            c = threading.Thread(target=run, args=("C",), name="C")
            c.start()
            c.join()
        return read(path)

    monkeypatch.setattr(io, "_lock_holder_alive", judged_late)
    if third:
        monkeypatch.setattr(io, "_read_lock", c_asks_meanwhile)
    a = threading.Thread(target=run, args=("A",), name="A")
    a.start()
    time.sleep(0.2)
    b = threading.Thread(target=run, args=("B",), name="B")
    b.start()
    a.join()
    b.join()
    assert inside == ["B"] and sorted(refused) == (["A", "C"] if third else ["A"]) and bool(c_asked) == third
    assert not lock.exists() and not list(tmp_path.glob(".miscnn.lock*")) and not list(tmp_path.glob("*.stale"))


def test_a_takeover_left_by_a_killed_process_is_cleared_and_a_running_one_waited_for(tmp_path, monkeypatch):
    "Without flock on the folder (NFS): the takeover file, its age rule and an error that names it."
    monkeypatch.setattr(io, "_folder_flock", lambda folder: None)
    lock, guard = tmp_path / io.LOCK_FILE, tmp_path / f"{io.LOCK_FILE}.takeover"
    dead = json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "command": "old", "started": "x"})
    lock.write_text(dead)
    guard.write_text("")
    os.utime(guard, (time.time() - 60, time.time() - 60))      # its process was killed a minute ago
    with io.output_lock(tmp_path, "new"):
        assert json.loads(lock.read_text())["command"] == "new" and not guard.exists()
    lock.write_text(dead)
    guard.write_text("")                                       # another process is taking over right now
    with pytest.raises(io.OutputLockedError, match=r"a takeover of its stale lock is under way \(.*takeover\)"):
        with io.output_lock(tmp_path, "new"):
            pass
    assert lock.read_text() == dead                            # left to the process that is taking over


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_the_age_rules_read_the_file_systems_clock_not_this_machines(tmp_path, monkeypatch, skew):
    "An NFS server stamps files with its own clock: a machine whose clock runs an hour ahead or behind neither"
    " clears a fresh takeover file or an empty lock being written, nor keeps a minute-old one."
    monkeypatch.setattr(io, "_folder_flock", lambda folder: None)
    real = time.time
    monkeypatch.setattr(io.time, "time", lambda: real() + skew)
    lock, guard = tmp_path / io.LOCK_FILE, tmp_path / f"{io.LOCK_FILE}.takeover"
    dead = json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "command": "old", "started": "x"})
    lock.write_text(dead)
    guard.write_text("")                                       # a takeover under way, stamped just now
    with pytest.raises(io.OutputLockedError, match="a takeover of its stale lock is under way"):
        with io.output_lock(tmp_path, "new"):
            pass
    assert guard.exists() and lock.read_text() == dead
    assert abs(io._age_on_disk(guard)) < 5
    os.utime(guard, (real() - 60, real() - 60))                # a minute old by the file system's clock
    with io.output_lock(tmp_path, "new"):
        assert json.loads(lock.read_text())["command"] == "new" and not guard.exists()
    lock.write_text("")                                        # a lock being written right now
    with pytest.raises(io.OutputLockedError, match="a process that is starting"):
        with io.output_lock(tmp_path, "new"):
            pass
    assert not list(tmp_path.glob(".*.now.tmp"))               # no probe left behind


def test_sampler_locations_with_background_still_centre_on_foreground():
    label = np.zeros((6, 16, 8), np.uint8)
    label[3, 5, 4] = 2
    image = np.zeros(label.shape, np.float32)
    sampler = PatchSampler((2, 8, 4), foreground_fraction=1.0)
    locations = class_locations(label, [0, 2])
    hits = sum(sampler(image, label, np.random.default_rng(i), locations=locations)[1].any() for i in range(50))
    assert hits == 50


def test_accumulator_names_slices_outside_the_volume():
    acc = PatchAccumulator((6, 6, 6), 2, (4, 4, 4))
    with pytest.raises(MiscnnError, match="must lie inside the volume"):
        acc.add((slice(4, 8), slice(0, 4), slice(0, 4)), np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(MiscnnError, match="must lie inside the volume"):
        acc.add((slice(-2, 2), slice(0, 4), slice(0, 4)), np.zeros((4, 4, 4, 2), np.float32))


def test_what_the_checks_above_must_still_accept(tmp_path):
    "Inputs a stricter check must not refuse: .nii.GZ, a byte-order mark, orientation codes as a tuple."
    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "m.nii.GZ")
    np.testing.assert_array_equal(load_nifti(tmp_path / "m.nii.GZ")[0], volume)
    (tmp_path / "d.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"seed": 1}).encode())
    assert io.load_mapping(tmp_path / "d.json") == {"seed": 1}
    np.testing.assert_array_equal(affine_from_spacing((1, 2, 3), ("S", "P", "L")), affine_from_spacing((1, 2, 3)))


def test_a_prediction_without_the_images_gantry_tilt_shear_still_loads(tmp_path):
    "SimpleITK-written labels drop a sheared sform's shear: the same voxels, voxel 0 in the same place."
    sheared = np.diag([-0.8, -0.8, 2.5, 1.0])
    sheared[1, 2] = 0.4
    sheared[:3, 3] = [200.0, 180.0, -300.0]
    image = np.random.default_rng(0).integers(-1000, 1000, (20, 15, 10)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, sheared), tmp_path / "tilt.nii.gz")    # a converter's sform, qform code 0
    case = load_case(tmp_path / "tilt.nii.gz")
    plain = sheared.copy()
    plain[1, 2] = 0.0
    save_nifti(tmp_path / "label.nii.gz", (image > 0).astype(np.uint8), plain)
    np.testing.assert_array_equal(load_prediction(tmp_path / "label.nii.gz", case), case.image > 0)


def test_a_prediction_on_a_sheared_image_keeps_its_placement_in_both_readers(tmp_path):
    "save_nifti refuses a shear it cannot write twice alike; save_prediction copies a sheared image file's header."
    import SimpleITK as sitk
    sheared = np.diag([-0.8, -0.8, 2.5, 1.0])
    sheared[1, 2] = 0.4
    image = np.random.default_rng(1).integers(-1000, 1000, (12, 9, 6)).astype(np.int16)
    with pytest.raises(io.DataError, match="axes are sheared"):
        save_nifti(tmp_path / "direct.nii.gz", image, sheared)
    assert not list(tmp_path.iterdir())
    for qform_code in (0, 1):                     # sform alone (a converter's), or with the shear-free qform beside it
        source = nib.Nifti1Image(image, sheared)
        source.set_qform(sheared, code=qform_code)
        nib.save(source, tmp_path / f"ct{qform_code}.nii.gz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # the two-affine warning, tested elsewhere
            case = load_case(tmp_path / f"ct{qform_code}.nii.gz")
            written = save_prediction((case.image > 0).astype(np.uint8), case, tmp_path / f"p{qform_code}.nii.gz")
            np.testing.assert_array_equal(load_prediction(written, case), case.image > 0)
        back = nib.load(written)
        assert back.get_qform(coded=True)[1] == qform_code and back.get_sform(coded=True)[1] == 2
        np.testing.assert_allclose(back.affine, sheared, atol=1e-5)
        if qform_code:                            # ITK reads the qform: the prediction lies where the image does
            ct, label = sitk.ReadImage(str(tmp_path / "ct1.nii.gz")), sitk.ReadImage(str(written))
            np.testing.assert_allclose(label.GetDirection(), ct.GetDirection(), atol=1e-6)
            np.testing.assert_allclose(label.GetOrigin(), ct.GetOrigin(), atol=1e-4)


@pytest.mark.parametrize("stored, high, slope, inter, dtype", [
    (np.uint16, 4095, 1, -1024, np.int16),      # CT as unsigned with an intercept: HU fit int16
    (np.uint16, 65535, 1, -1024, np.int32),     # 65535 - 1024 does not
    (np.int8, 127, 2, -7, np.int16),            # whole-number slope: integers, widened to hold the range
    (np.int32, 2**31 - 1, 3, 0, np.int64),
    (np.int16, 32767, 0.5, 3, np.float32),      # a fractional slope: float32, not float64
    (np.float32, 1.0, 2.0, 1.0, np.float32),
])
def test_a_scaled_file_keeps_nibabels_values_in_a_compact_dtype(tmp_path, stored, high, slope, inter, dtype):
    low = np.iinfo(stored).min if np.dtype(stored).kind in "iu" else 0.0
    raw = np.linspace(low, high, 120).reshape(4, 5, 6).astype(stored)     # the range's ends decide the dtype
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(slope, inter)
    nib.save(img, tmp_path / "s.nii.gz")
    values, _ = load_nifti(tmp_path / "s.nii.gz")
    expected = np.asanyarray(nib.load(tmp_path / "s.nii.gz").dataobj)      # nibabel's float64 reference
    assert values.dtype == dtype
    np.testing.assert_allclose(values.astype(np.float64), expected, rtol=1e-6 if dtype == np.float32 else 0)


def test_a_wrong_orientation_is_named_when_the_dataset_is_opened(tmp_path):
    from miscnn_lite.io import SettingsError, open_dataset, save_case
    from miscnn_lite.phantoms import toy_case
    save_case(toy_case(0), tmp_path / "data")
    with pytest.raises(SettingsError, match="orientation='XYZ': give three axis codes"):
        open_dataset(tmp_path / "data", orientation="XYZ")
    assert open_dataset(tmp_path / "data", orientation="ras").orientation == "RAS"


def test_qform_and_sform_that_disagree_are_named(tmp_path):
    "nibabel reads the sform, SimpleITK the qform: a file whose two differ is read with a warning naming both."
    affine = io.affine_from_spacing((2.5, 0.8, 0.7), "LAS", origin=(10, -20, 30))
    moved = affine.copy()
    moved[2, 3] = 99.0
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(moved, code=2)
    nib.save(img, tmp_path / "two.nii.gz")
    said = r"sform \(code 2\) and qform \(code 1\) place the image differently \(sform \[\[.*99.0\]"
    with pytest.warns(UserWarning, match=said):
        _, read = io.load_nifti(tmp_path / "two.nii.gz")
    assert read[2, 3] == 99.0                                  # the sform, as nibabel
    io.save_nifti(tmp_path / "one.nii.gz", np.zeros((4, 5, 6), np.int16), affine)
    header = nib.load(tmp_path / "one.nii.gz").header
    assert header.get_xyzt_units()[0] == "mm"


def test_dicom_writer_refuses_a_folder_with_slices(tmp_path):
    volume = np.zeros((3, 8, 8), np.int16)
    first = io.write_dicom_series(volume, tmp_path / "ct")
    with pytest.raises(io.OutputError, match="already holds .dcm files"):
        io.write_dicom_series(volume[:2], tmp_path / "ct")
    assert sorted(tmp_path.joinpath("ct").iterdir()) == first


def test_a_case_without_its_label_among_labelled_ones_is_named(tmp_path):
    "A misspelt segmentation file (KiTS19) or a missing labelsTr file (nnU-Net): the case is read unlabelled, said so."
    image, label = np.zeros((4, 8, 8), np.int16), np.zeros((4, 8, 8), np.uint8)
    for cid in ("case_00000", "case_00001"):
        io.save_case(io.case_from_arrays(image, label, case_id=cid), tmp_path / "k")
    io.save_case(io.case_from_arrays(image, None, case_id="case_00002"), tmp_path / "k")
    io.save_nifti(tmp_path / "k" / "case_00002" / "segmentaton.nii.gz", label, io.affine_from_spacing((1, 1, 1)))
    with pytest.warns(UserWarning, match=r"1 of 3 cases have no label \(case_00002\)"):
        io.KiTS19Reader(tmp_path / "k")
    for cid in ("a", "b"):
        io.save_case(io.case_from_arrays(image, label if cid == "a" else None, case_id=cid), tmp_path / "n",
                     layout="nnunet")
    with pytest.warns(UserWarning, match=r"1 of 2 cases have no label \(b\).*labelsTr/<id>.nii.gz"):
        io.NnUNetReader(tmp_path / "n")
    io.save_nifti(tmp_path / "n" / "imagesTr" / "case_0001.nii.gz", image, io.affine_from_spacing((1, 1, 1)))
    with pytest.warns(UserWarning, match="channel 0001 of a case 'case' that has no channel 0000"):
        io.NnUNetReader(tmp_path / "n")


def test_foreground_slices_of_a_case_that_is_not_axial_first_warn():
    from miscnn_lite.preprocessing import PercentileWindow
    image = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    label = np.zeros(image.shape, np.uint8)
    label[1, 2, 3] = 1
    ras = io.case_from_arrays(image, label, affine=io.affine_from_spacing((2, 1, 1), "RAS"))   # not the identity
    with pytest.warns(UserWarning, match="its 'slices' are not axial"):
        PercentileWindow(0.0, 1.0, region="foreground_slices", samples_per_case=None).fit([ras])


def test_masks_that_cannot_be_read_exactly_are_refused(tmp_path):
    "JPEG masks (lossy at every edge) and masks with transparent pixels (a hidden colour) name the fix."
    from PIL import Image

    from miscnn_lite.io import read_mask
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(io.DataError, match="a JPEG mask; JPEG is lossy.*Export the masks as PNG"):
        read_mask(tmp_path / "m.jpg")
    erased = np.zeros((8, 8, 4), np.uint8)
    erased[..., 0] = 255                                    # red everywhere, opaque only on the kidney
    erased[2:4, 2:4, 3] = 255
    Image.fromarray(erased, "RGBA").save(tmp_path / "erased.png")
    for colors in (None, {0: "#000000", 1: "#ff0000"}):
        with pytest.raises(io.DataError, match="60 pixel\\(s\\) are transparent"):
            read_mask(tmp_path / "erased.png", colors)
    erased[..., 3] = 255
    Image.fromarray(erased, "RGBA").save(tmp_path / "opaque.png")
    assert (read_mask(tmp_path / "opaque.png", {0: "#000000", 1: "#ff0000"}) == 1).all()


def test_black_and_white_masks_point_to_a_colour_table(tmp_path):
    from PIL import Image

    from miscnn_lite.loading import validate_cases
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    reader = io.open_dataset(tmp_path)
    from miscnn_lite.loading import ReaderItem
    with pytest.raises(io.DataError, match='black-and-white mask.*"colors": \\{"0": 0, "1": 255\\}'):
        validate_cases([ReaderItem(reader, "a")], n_classes=2)


def test_a_label_on_the_same_grid_in_another_format_or_axis_order_loads(tmp_path):
    "NIfTI reads (i, j, k), ITK (k, j, i): a Slicer-style segmentation.nrrd beside imaging.nii.gz is the same grid."
    import SimpleITK as sitk
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    image = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    label = (image % 3).astype(np.uint8)
    case_dir = tmp_path / "kits" / "case_00000"
    case_dir.mkdir(parents=True)
    save_nifti(case_dir / "imaging.nii.gz", image, affine)
    save_nifti(tmp_path / "seg.nii.gz", label, affine)
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz")), str(case_dir / "segmentation.nrrd"))
    case = io.open_dataset(tmp_path / "kits").load_case("case_00000")
    np.testing.assert_array_equal(case.label, io.reorient(label, affine)[0])
    np.testing.assert_array_equal(case.image, io.reorient(image, affine)[0])
    turned, turned_affine = io.reorient(label, affine, "LAS")            # the same voxels, stored another way round
    save_nifti(tmp_path / "turned.nii.gz", turned, turned_affine)
    np.testing.assert_array_equal(load_case(case_dir / "imaging.nii.gz", tmp_path / "turned.nii.gz").label, case.label)
    shifted = affine.copy()
    shifted[0, 3] += 5.0                                                  # other voxels: still refused
    save_nifti(tmp_path / "shifted.nii.gz", label, shifted)
    with pytest.raises(DataError, match="shifted.nii.gz"):
        load_case(case_dir / "imaging.nii.gz", tmp_path / "shifted.nii.gz")


def test_a_picture_dataset_reads_no_description_from_the_folder_above_it(tmp_path):
    "A dataset.json above a dataset root belongs to something else; above a masks/ folder it is the dataset's."
    (tmp_path / "dataset.json").write_text(json.dumps({"spacing": [0.2, 0.2], "colors": {"0": "#000000",
                                                                                          "1": "#ffffff"}}))
    root = tmp_path / "xray"
    write_picture(root / "images" / "a.png", np.zeros((4, 4), np.uint8))
    io.write_mask(root / "masks" / "a.png", np.eye(4, dtype=np.uint8))
    reader = io.open_dataset(root)
    assert reader.spacing == (1.0, 1.0) and not reader.colors
    np.testing.assert_array_equal(reader.load_case("a").label[0], np.eye(4))
    (root / "dataset.json").write_text(json.dumps({"spacing": [0.5, 0.25]}))
    assert io.read_picture_sidecar(root / "masks") == {"spacing": (0.5, 0.25)}      # a mask folder's dataset
    assert io.read_picture_sidecar(root) == {"spacing": (0.5, 0.25)}


def test_headers_refuse_what_load_case_refuses_by_name(tmp_path):
    from miscnn_lite.io import CorruptFileError
    kits = tmp_path / "kits"
    save_nifti(kits / "case_00000" / "imaging.nii.gz", np.zeros((4, 5, 6), np.int16), np.eye(4))
    (kits / "case_00001").mkdir()
    (kits / "case_00001" / "imaging.nii.gz").write_bytes((kits / "case_00000" / "imaging.nii.gz").read_bytes()[:30])
    save_nifti(kits / "case_00002" / "imaging.nii.gz", np.zeros((4, 5, 6, 2), np.int16), np.eye(4))
    reader = io.open_dataset(kits)
    assert reader.header("case_00000")["shape"] == (6, 5, 4)
    with pytest.raises(CorruptFileError, match=r"case_00001/imaging.nii.gz: its header cannot be read"):
        reader.header("case_00001")
    with pytest.raises(DataError, match=r"case_00002/imaging.nii.gz: image has shape \(4, 5, 6, 2\); a 3D volume"):
        reader.header("case_00002")
    npz = tmp_path / "npz"
    npz.mkdir()
    np.savez(npz / "a.npz", img=np.zeros((2, 3, 4)))
    (npz / "b.npz").write_bytes(b"not a zip file")
    reader = io.open_dataset(npz)
    with pytest.raises(DataError, match=r"a.npz: no 'image' array \(found \['img'\]\)"):
        reader.header("a")
    for call in (reader.header, reader.has_label):
        with pytest.raises(DataError, match=r"b.npz: cannot be read as .npz \(BadZipFile"):
            call("b")
    pictures = tmp_path / "pictures"
    (pictures / "images").mkdir(parents=True)
    (pictures / "images" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(CorruptFileError, match=r"x.png: cannot be read as a picture"):
        io.open_dataset(pictures).header("x")


def test_write_dicom_series_refuses_what_is_not_a_volume_before_making_its_folder(tmp_path):
    for volume, spacing, origin, words in [
            (np.zeros((4, 4), np.int16), (2.5, 0.7, 0.7), (0, 0, 0), r"shape \(4, 4\); give a \(D, H, W\) volume"),
            (np.zeros((2, 3, 4, 5), np.int16), (2.5, 0.7, 0.7), (0, 0, 0), r"shape \(2, 3, 4, 5\)"),
            (np.zeros((2, 3, 4), np.int16), (1, -1, 1), (0, 0, 0), r"spacing \(1.0, -1.0, 1.0\) mm is invalid"),
            (np.zeros((2, 3, 4), np.int16), (1, 1, 1), (0, np.nan), r"origin \(0, nan\) must be three finite")]:
        with pytest.raises(DataError, match=words):
            write_dicom_series(volume, tmp_path / "series", spacing, origin)
        assert not (tmp_path / "series").exists()
