#!/usr/bin/env python3
"""Download KiTS19 CT cases into the KiTS19 folder layout.

    OUT/case_00000/imaging.nii.gz
    OUT/case_00000/segmentation.nii.gz
    ...
    OUT/checksums.sha256          # `sha256sum -c checksums.sha256` works inside OUT

Images come from the public KiTS19 imaging mirror (the one the kits19 repository's
`starter_code/get_imaging.py` downloads from), segmentations from the kits19 GitHub repository.
Both base URLs are options, so a local mirror or a test server can stand in.

What the script guarantees, and why:
- downloads run in parallel threads (the files are ~20-400 MB each: the network, not the CPU, is
  the limit) with one progress bar counting bytes;
- a file is written as `NAME.part` and renamed with `os.replace` only when complete, so a file
  with its final name is never half written;
- an interrupted download resumes from the `.part` file with an HTTP `Range: bytes=N-` request
  (a server that answers 200 instead of 206 ignored the range: the file restarts from byte 0);
- the size is checked against Content-Length, and a SHA-256 of every file is recorded in
  `checksums.sha256` on its first complete download; later runs verify files against it, delete
  and re-download a mismatching file, and stop with an error if the server keeps sending
  different bytes;
- names that would leave OUT (`..`, absolute paths, symlinks pointing outside) are refused;
- a final layout check confirms every requested case folder holds its files.

Only the standard library and tqdm are used, so it runs before the package is installed:

    python data_scripts/download_kits19.py --cases 0-119 --out data/kits19
    python data_scripts/download_kits19.py --cases 0-9,15,20-22 --interpolated --workers 8

From Python (with data_scripts/ on sys.path):

    from download_kits19 import download_cases
    download_cases([0, 1, 2], "data/kits19")
"""

import argparse
import contextlib
import gzip
import hashlib
import http.client
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

try:
    from tqdm.auto import tqdm
except ImportError:  # the bar is a convenience; downloading works without it
    tqdm = None

__all__ = ["main", "download_cases", "download_file", "parse_cases", "plan_downloads", "check_layout",
           "resolve_inside", "ChecksumBook", "DownloadJob", "DownloadResult", "DownloadError",
           "ChecksumMismatchError", "UnsafePathError", "LayoutError"]

# Facts about KiTS19 (https://github.com/neheller/kits19): 300 cases, case_00000..case_00299;
# segmentations are public only for the 210 training cases 0..209.
N_CASES = 300
N_LABELLED_CASES = 210
# Imaging mirror used by kits19's starter_code/get_imaging.py (Hugging Face dataset
# neheller/KiTS-Challenge-Imaging): images/case_XXXXX.nii.gz; the `interpolated` branch of
# kits19 downloads interpolated/images/case_XXXXX.nii.gz from the same dataset.
IMAGING_URL = "https://huggingface.co/datasets/neheller/KiTS-Challenge-Imaging/resolve/main/images"
INTERPOLATED_IMAGING_URL = ("https://huggingface.co/datasets/neheller/KiTS-Challenge-Imaging/resolve/main/"
                            "interpolated/images")
# Segmentations live in the kits19 repository itself: data/case_XXXXX/segmentation.nii.gz on the
# `master` branch (original spacing) and on the `interpolated` branch (resampled).
SEGMENTATION_URL = "https://raw.githubusercontent.com/neheller/kits19/master/data"
INTERPOLATED_SEGMENTATION_URL = "https://raw.githubusercontent.com/neheller/kits19/interpolated/data"
LFS_MEDIA_SEGMENTATION_URL = "https://media.githubusercontent.com/media/neheller/kits19/master/data"

IMAGING_NAME, SEGMENTATION_NAME = "imaging.nii.gz", "segmentation.nii.gz"
CHECKSUM_FILE = "checksums.sha256"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20       # hashing reads
READ_BYTES = 1 << 16        # network reads: small enough for a lively progress bar
USER_AGENT = "miscnn-lite-download-kits19/1.0 (python-urllib)"
GZIP_MAGIC = b"\x1f\x8b"
LFS_POINTER_PREFIX = b"version https://git-lfs"
# HTTP codes worth retrying (server busy or momentarily broken); any other 4xx is final.
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(Exception):
    "A download failed in a way the user must act on; the message says what to do."


class ChecksumMismatchError(DownloadError):
    "A file's SHA-256 differs from the one recorded in checksums.sha256."


class UnsafePathError(DownloadError):
    "A file name would place a file outside the output folder."


class HostNotFoundError(DownloadError):
    """The server's host name does not resolve (no network, a proxy needed, a mistyped URL): no retry helps,
    and every other file of the run would fail the same way, so the run stops at the first."""


class LayoutError(DownloadError):
    "The output folder lacks files of requested cases after downloading."


class _TransientError(Exception):
    "A failure worth retrying (dropped connection, short body, 5xx)."


class _Cancelled(BaseException):
    "Raised inside worker threads after Ctrl-C so they stop at the next chunk (the .part is kept)."


# ---------------------------------------------------------------------------------------------
# Case specifications
# ---------------------------------------------------------------------------------------------
def case_name(index: int) -> str:
    "KiTS19 folder name of case `index`: 3 -> 'case_00003'."
    return f"case_{index:05d}"


def _parse_case_token(token: str, spec: str, n_cases: int) -> range:
    "One comma-separated piece of a case spec ('7' or '3-9') as a range of indices."
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
    if match is None:
        raise DownloadError(
            f"--cases {spec!r}: {token!r} is not a case number or a range. "
            "Expected comma-separated numbers and ranges such as '0-9,15,20-22' (or 'all').")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if first > last:
        raise DownloadError(f"--cases {spec!r}: range {token!r} runs backwards. Write it as '{last}-{first}'.")
    if last >= n_cases:
        raise DownloadError(
            f"--cases {spec!r}: case {last} does not exist; KiTS19 has cases 0..{n_cases - 1} "
            f"(segmentations only for 0..{N_LABELLED_CASES - 1}).")
    return range(first, last + 1)


def parse_cases(spec: str, n_cases: int = N_CASES) -> list[int]:
    """Case indices named by `spec`, sorted and without repeats.

    Args:
        spec: comma-separated case numbers and inclusive ranges, e.g. '0-9,15,20-22';
            'all' means 0..n_cases-1. Spaces are ignored.
        n_cases: number of cases in the dataset (KiTS19: 300).
    Returns:
        sorted list of int indices, e.g. [0, 1, ..., 9, 15, 20, 21, 22].
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DownloadError(f"--cases {spec!r}: empty case list. Give e.g. '0-119' or '0-9,15'.")
    text = spec.replace(" ", "")
    if text.lower() == "all":
        return list(range(n_cases))
    indices: set[int] = set()
    for token in text.split(","):
        indices.update(_parse_case_token(token, spec, n_cases))
    return sorted(indices)


# ---------------------------------------------------------------------------------------------
# Paths that stay inside the output folder
# ---------------------------------------------------------------------------------------------
def resolve_inside(root: Path | str, relpath: str) -> Path:
    """Absolute path of `relpath` under `root`, refusing any name that leaves `root`.

    Refused: absolute paths, '..' components, backslashes, drive letters, empty names, and paths
    whose resolved location (after following symlinks) is outside `root`.
    """
    root = Path(root).resolve()
    parts = PurePosixPath(relpath).parts
    bad = (not relpath or "\\" in relpath or "\x00" in relpath or PurePosixPath(relpath).is_absolute()
           or ".." in parts or (parts and ":" in parts[0]))
    if not bad:
        target = (root / PurePosixPath(relpath)).resolve()
        bad = root not in target.parents  # strictly inside: '.' names the folder itself, not a file
    if bad:
        raise UnsafePathError(
            f"{relpath!r}: refusing a file name that leaves the output folder {root}. "
            "File names must be relative paths inside it, like 'case_00003/imaging.nii.gz'.")
    return target


# ---------------------------------------------------------------------------------------------
# What to download
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadJob:
    "One file to fetch: `url` is stored at `relpath` inside the output folder."
    url: str
    relpath: str


def case_url(base_or_template: str, index: int, default_suffix: str) -> str:
    """URL of case `index` from a base URL or a template.

    A template contains `{case}` ('case_00003') and/or `{index}` (3; `{index:05d}` works);
    a plain base URL gets `/` + `default_suffix` (which itself may hold `{case}`).
    """
    template = base_or_template if "{" in base_or_template else base_or_template.rstrip("/") + "/" + default_suffix
    try:
        return template.format(case=case_name(index), index=index)
    except (KeyError, IndexError, ValueError) as e:
        raise DownloadError(
            f"URL template {base_or_template!r}: cannot fill it in ({type(e).__name__}: {e}). "
            "Only the fields {case} (case_00003) and {index} (3, e.g. {index:05d}) exist.") from None


def plan_downloads(cases: list[int], imaging_url: str | None = None, segmentation_url: str | None = None,
                   interpolated: bool = False, segmentation: bool = True) -> list[DownloadJob]:
    """The files to fetch for `cases`, images first.

    Args:
        cases: case indices (see `parse_cases`).
        imaging_url, segmentation_url: base URL or template (see `case_url`); None picks the
            public KiTS19 sources, the interpolated variants when `interpolated` is True.
        interpolated: use the kits19 'interpolated' data (every case resampled to one spacing).
        segmentation: also fetch segmentations (only cases < 210 have one).
    """
    imaging_url = imaging_url or (INTERPOLATED_IMAGING_URL if interpolated else IMAGING_URL)
    segmentation_url = segmentation_url or (INTERPOLATED_SEGMENTATION_URL if interpolated else SEGMENTATION_URL)
    jobs = [DownloadJob(case_url(imaging_url, i, "{case}.nii.gz"), f"{case_name(i)}/{IMAGING_NAME}") for i in cases]
    if segmentation:
        jobs += [DownloadJob(case_url(segmentation_url, i, "{case}/" + SEGMENTATION_NAME),
                             f"{case_name(i)}/{SEGMENTATION_NAME}") for i in cases if i < N_LABELLED_CASES]
    return jobs


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    "Write `text` to `path` through a temp file in the same folder and os.replace."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shared data folder should stay readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (standard library only, like the whole script: it runs
    before the kit is installed; `miscnn_lite.loading.file_fingerprint` is the library's)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumBook:
    """The `checksums.sha256` file of an output folder, in `sha256sum` format ('HEX  relpath').

    Thread-safe: downloads in several threads record their hashes here; each `record` rewrites
    the file atomically, so an interrupted run never leaves it half written.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.path = self.root / CHECKSUM_FILE
        self._lock = threading.Lock()
        self._sums = self._read()

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        sums = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
            if match is None:
                if line.strip():
                    raise DownloadError(
                        f"{self.path}:{n}: {line[:80]!r} is not a 'SHA256HEX  relative/path' line. "
                        f"Fix or delete that line (or the whole file to re-record every checksum).")
                continue
            resolve_inside(self.root, match.group(2))  # a checksum file must not point outside
            sums[match.group(2)] = match.group(1).lower()
        return sums

    def get(self, relpath: str) -> str | None:
        "Recorded hex SHA-256 of `relpath`, or None."
        with self._lock:
            return self._sums.get(relpath)

    def record(self, relpath: str, sha256: str) -> None:
        "Store the hash of `relpath` and rewrite the file."
        with self._lock:
            self._sums[relpath] = sha256
            text = "".join(f"{h}  {p}\n" for p, h in sorted(self._sums.items()))
            _atomic_write_text(self.path, text)


# ---------------------------------------------------------------------------------------------
# Progress (one byte-counting bar shared by all threads)
# ---------------------------------------------------------------------------------------------
class _Progress:
    "A thread-safe byte counter over a tqdm bar whose total grows as sizes become known."

    def __init__(self, n_files: int, enabled: bool):
        self._lock = threading.Lock()
        self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=f"0/{n_files} files",
                         disable=not enabled or tqdm is None, dynamic_ncols=True) if tqdm else None
        self._n_files, self._done_files = n_files, 0
        self._totals: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self.cancelled = threading.Event()

    def start(self, key: str, on_disk: int, total: int | None) -> None:
        "A (re)started transfer of `key`: `on_disk` bytes are already there, `total` expected."
        with self._lock:
            if self._bar is None:
                return
            if total is not None and total != self._totals.get(key):
                self._bar.total += total - self._totals.get(key, 0)
                self._totals[key] = total
            self._bar.update(on_disk - self._counts.get(key, 0))
            self._counts[key] = on_disk

    def advance(self, key: str, n_bytes: int) -> None:
        "Count `n_bytes` more of `key`; raises _Cancelled once `cancelled` is set."
        if self.cancelled.is_set():
            raise _Cancelled()
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n_bytes
            if self._bar is not None:
                self._bar.update(n_bytes)

    def file_done(self) -> None:
        with self._lock:
            self._done_files += 1
            if self._bar is not None:
                self._bar.set_description(f"{self._done_files}/{self._n_files} files", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------------------------
# One HTTP transfer with Range resume
# ---------------------------------------------------------------------------------------------
def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    "'bytes 100-199/200' -> (100, 200); total None when the server wrote '*'."
    match = re.fullmatch(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", (value or "").strip())
    if match is None:
        raise _TransientError(f"{url}: 206 answer with unreadable Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _open(url: str, offset: int, timeout_s: float):
    "urlopen `url`, asking for bytes from `offset` on when `offset` > 0."
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)


def _range_not_satisfiable(error: urllib.error.HTTPError, part: Path, offset: int) -> bool:
    "After a 416: True when the .part file is already complete; otherwise it is deleted."
    match = re.fullmatch(r"bytes\s+\*/(\d+)", (error.headers.get("Content-Range") or "").strip())
    if match and int(match.group(1)) == offset:
        return True
    part.unlink(missing_ok=True)  # longer than the remote file: it cannot be a prefix of it
    return False


def _transfer(url: str, part: Path, timeout_s: float, progress: _Progress, key: str) -> int:
    """Append the rest of `url` to `part` (or restart it); returns the bytes already on disk before.

    Raises _TransientError on a dropped connection or a body shorter than announced (the .part
    file is kept for the next attempt) and urllib.error.HTTPError for HTTP errors.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout_s)
    except urllib.error.HTTPError as e:
        e.close()  # headers stay readable; the socket is released
        if e.code == 416 and offset:
            if _range_not_satisfiable(e, part, offset):
                return offset
            raise _TransientError(f"{url}: the partial file was longer than the remote file; restarting") from None
        raise
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"), url)
            if start != offset:
                part.unlink(missing_ok=True)
                raise _TransientError(f"{url}: asked for bytes from {offset}, server sent from {start}")
            mode = "ab"
        else:  # 200: the server ignored the Range header (or none was sent): start over
            start, total, mode = 0, int(length) if length is not None else None, "wb"
        progress.start(key, start, total)
        try:
            with open(part, mode) as f:
                while chunk := response.read(READ_BYTES):
                    f.write(chunk)
                    progress.advance(key, len(chunk))
        except (http.client.HTTPException, OSError) as e:
            raise _TransientError(f"{url}: connection lost after {part.stat().st_size} bytes ({e!r})") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise _TransientError(f"{url}: received {size} of {total} bytes (Content-Length)")
    return start


def _check_gzip(part: Path, url: str) -> None:
    """Refuse content that is not a gzip-compressed NIfTI: an HTML error page, a Git LFS pointer, or gzip data
    whose first field (sizeof_hdr) is not a NIfTI-1's 348 or a NIfTI-2's 540."""
    with open(part, "rb") as f:
        head = f.read(64)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(part, "rb") as f:
                first = f.read(4)
        except (OSError, EOFError):
            first = b""
        if len(first) == 4 and {int.from_bytes(first, "little"), int.from_bytes(first, "big")} & {348, 540}:
            return
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} returned gzip data that is not a NIfTI file (it does not start with a NIfTI "
                            "header). Check the base URL (--imaging-url / --segmentation-url).")
    part.unlink(missing_ok=True)
    if head.startswith(LFS_POINTER_PREFIX):
        raise DownloadError(
            f"{url} returned a Git LFS pointer file, not the NIfTI data. Point --segmentation-url at "
            f"the LFS media host instead, e.g. {LFS_MEDIA_SEGMENTATION_URL}")
    raise DownloadError(
        f"{url} returned {head[:40]!r}..., not a gzip-compressed NIfTI (.nii.gz starts with 1f 8b). "
        "Check the base URL (--imaging-url / --segmentation-url): it may serve an error or login page.")


# ---------------------------------------------------------------------------------------------
# One file: existing-file check, retries, verification, atomic rename
# ---------------------------------------------------------------------------------------------
@dataclass
class DownloadResult:
    """What happened to one file.

    status: 'downloaded' (fetched now), 'resumed' (continued a .part file), 'verified' (present and
    matching its recorded checksum), 'recorded' (present with no record: its checksum was recorded),
    'repaired' (present but mismatching its checksum: deleted and fetched again).
    """
    relpath: str
    url: str
    status: str
    size_bytes: int
    sha256: str
    resumed_from_bytes: int = 0


def _http_error_message(e: urllib.error.HTTPError, url: str) -> str:
    hint = {404: "the file does not exist there. Check --imaging-url/--segmentation-url and --cases "
                 f"(segmentations exist only for cases 0..{N_LABELLED_CASES - 1})",
            401: "the server wants credentials", 403: "access is forbidden (a private or moved mirror?)"}
    return f"{url}: HTTP {e.code} {e.reason}: {hint.get(e.code, 'the server refused the request')}."


def _existing_file(dest: Path, job: DownloadJob, book: ChecksumBook) -> DownloadResult | None:
    "A result when `dest` is present and trustworthy; None when it must be (re)fetched."
    if not dest.is_file():
        return None
    sha, expected = sha256_of(dest), book.get(job.relpath)
    if expected is None:
        book.record(job.relpath, sha)
        return DownloadResult(job.relpath, job.url, "recorded", dest.stat().st_size, sha)
    if sha == expected:
        return DownloadResult(job.relpath, job.url, "verified", dest.stat().st_size, sha)
    dest.unlink()
    return None


def download_file(job: DownloadJob, root: Path | str, book: ChecksumBook | None = None, retries: int = 3,
                  backoff_s: float = 1.0, timeout_s: float = 60.0, progress: _Progress | None = None) -> DownloadResult:
    """Fetch `job.url` to `root/job.relpath`, resuming, verifying and renaming atomically.

    Args:
        job: URL and relative destination (checked to stay inside `root`).
        root: output folder.
        book: checksum record of `root` (created when None).
        retries: extra attempts after a transient failure or a checksum mismatch.
        backoff_s: wait before retry k is backoff_s * 2**k seconds.
        timeout_s: socket timeout per connect/read, seconds.
    Returns:
        DownloadResult. Raises DownloadError (HTTP error, bad content, retries exhausted) or
        ChecksumMismatchError (the server keeps sending bytes other than the recorded ones).
    """
    root, book = Path(root), book or ChecksumBook(root)
    progress = progress or _Progress(1, enabled=False)
    dest = resolve_inside(root, job.relpath)
    dest.parent.mkdir(parents=True, exist_ok=True)
    had_file = dest.is_file()
    if (result := _existing_file(dest, job, book)) is not None:
        progress.file_done()
        return result
    part, expected = dest.with_name(dest.name + PART_SUFFIX), book.get(job.relpath)
    resumed_from, last_problem = 0, ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        dest.parent.mkdir(parents=True, exist_ok=True)   # again: a parallel download of the case may have given up
        try:
            resumed_from = _transfer(job.url, part, timeout_s, progress, job.relpath)
        except urllib.error.HTTPError as e:
            if e.code not in TRANSIENT_HTTP:
                raise DownloadError(_http_error_message(e, job.url)) from None
            last_problem = _http_error_message(e, job.url)
            continue
        except (_TransientError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None)
            if isinstance(reason, socket.gaierror) and reason.errno in (socket.EAI_NONAME,
                                                                        getattr(socket, "EAI_NODATA", None)):
                if not part.exists() and dest.parent != root:
                    with contextlib.suppress(OSError):
                        dest.parent.rmdir()
                host = urllib.parse.urlsplit(job.url).hostname
                raise HostNotFoundError(f"{job.url}: the host name {host!r} cannot be resolved ({reason.strerror}): "
                                        "check the network connection, the proxy or the URL, then run the same "
                                        "command again.") from None
            last_problem = str(e.reason if isinstance(e, urllib.error.URLError) else e)
            if isinstance(getattr(e, "reason", None), socket.gaierror):
                last_problem += "; the host name cannot be resolved: check the network connection or proxy"
            continue
        _check_gzip(part, job.url)
        sha = sha256_of(part)
        if expected is not None and sha != expected:
            part.unlink()
            last_problem = f"SHA-256 {sha} instead of {expected}"
            continue
        os.replace(part, dest)
        if expected is None:
            book.record(job.relpath, sha)
        progress.file_done()
        status = "repaired" if had_file else ("resumed" if resumed_from else "downloaded")
        return DownloadResult(job.relpath, job.url, status, dest.stat().st_size, sha, resumed_from)
    if not part.exists() and dest.parent != root:
        with contextlib.suppress(OSError):           # gone or not empty: the case's other file got there first
            dest.parent.rmdir()                      # no byte arrived: leave no empty case folder behind
    raise _give_up(job, dest, part, book, retries + 1, last_problem)


def _give_up(job: DownloadJob, dest: Path, part: Path, book: ChecksumBook, attempts: int,
             problem: str) -> DownloadError:
    "The error after the last attempt: a checksum mismatch or a transfer that kept failing."
    if problem.startswith("SHA-256"):
        return ChecksumMismatchError(
            f"{dest}: checksum mismatch after {attempts} attempts: {job.url} sent {problem} recorded "
            f"in {book.path}. The server's file differs from the one first downloaded. If that is expected "
            f"(a new data release), delete the line for {job.relpath} from {book.path} and run again.")
    kept = f"The partial file {part} is kept: " if part.exists() else ""
    return DownloadError(f"{job.url}: failed after {attempts} attempts ({problem}). {kept}"
                         "run the same command again to resume, or raise --retries.")


# ---------------------------------------------------------------------------------------------
# Many files, in parallel, then the layout check
# ---------------------------------------------------------------------------------------------
def ensure_writable_folder(out: Path | str) -> Path:
    "Create `out` if needed and prove it is writable; a DownloadError says how to fix it."
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DownloadError(f"--out {out}: exists and is not a folder. Choose another --out.") from None
    except OSError as e:
        raise DownloadError(f"--out {out}: cannot create the folder ({e.strerror}). "
                            "Choose a --out under a folder you can write to.") from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write_test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DownloadError(f"--out {out}: the folder is not writable ({e.strerror}). "
                            "Fix its permissions or choose another --out.") from None
    return out


def check_layout(root: Path | str, cases: list[int], segmentation: bool = True) -> list[str]:
    """Names of the files missing from the KiTS19 layout of `root` for `cases` ([] when complete).

    Expected: root/case_XXXXX/imaging.nii.gz for every case, and segmentation.nii.gz for every case
    below 210 when `segmentation` is True; an empty file counts as missing (a .part file is not the file).
    """
    root, missing = Path(root), []
    for i in cases:
        names = [IMAGING_NAME] + ([SEGMENTATION_NAME] if segmentation and i < N_LABELLED_CASES else [])
        for name in names:
            path = root / case_name(i) / name
            if not path.is_file() or path.stat().st_size == 0:
                missing.append(f"{case_name(i)}/{name}")
    return missing


def _run_jobs(jobs: list[DownloadJob], root: Path, book: ChecksumBook, workers: int, progress: _Progress,
              **kwargs) -> tuple[list[DownloadResult], list[DownloadError]]:
    "Run `download_file` for every job in a thread pool; returns results and failures."
    results, failures = [], []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kits19") as pool:
        futures = {pool.submit(download_file, job, root, book, progress=progress, **kwargs): job for job in jobs}
        try:
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except HostNotFoundError as e:      # every file would fail alike: stop the run here
                    failures.append(e)
                    progress.cancelled.set()
                    for other in futures:
                        other.cancel()
                    break
                except DownloadError as e:
                    failures.append(e)
                except OSError as e:  # local trouble: disk full, permissions inside OUT
                    failures.append(DownloadError(f"{futures[future].relpath}: {e}"))
                except Exception as e:  # anything else (a malformed answer): reported per file, the rest go on
                    failures.append(DownloadError(f"{futures[future].relpath}: unexpected {type(e).__name__}: {e}"))
        except KeyboardInterrupt:
            progress.cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return sorted(results, key=lambda r: r.relpath), failures


def _remove_empty_folders(created: list[Path]) -> None:
    "Remove the folders of `created` that are still empty, deepest first: a run that got nothing leaves none."
    for folder in created:
        for here, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(here)                    # fails (kept) when it holds anything


def download_cases(cases: list[int], out: Path | str, imaging_url: str | None = None,
                   segmentation_url: str | None = None, interpolated: bool = False, segmentation: bool = True,
                   workers: int = 4, retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 60.0,
                   progress: bool = True) -> list[DownloadResult]:
    """Download KiTS19 `cases` into `out` (KiTS19 layout) and check the layout.

    Args:
        cases: case indices 0..299 (see `parse_cases`).
        out: output folder, created if missing.
        imaging_url, segmentation_url, interpolated, segmentation: see `plan_downloads`.
        workers: parallel downloads (threads), >= 1.
        retries: extra attempts per file, >= 0; backoff_s * 2**k seconds between them.
        timeout_s: socket timeout, seconds.
        progress: show a tqdm bar (bytes) on stderr.
    Returns:
        one DownloadResult per file, sorted by path. Raises DownloadError listing every failed file
        (the others are still downloaded) and LayoutError when files are missing at the end.
    """
    if not isinstance(workers, int) or workers < 1:
        raise DownloadError(f"--workers {workers!r}: must be an integer >= 1 (4-8 suits most connections).")
    if not isinstance(retries, int) or retries < 0:
        raise DownloadError(f"--retries {retries!r}: must be an integer >= 0.")
    for flag, value, low in (("--backoff-seconds", backoff_s, 0.0), ("--timeout-seconds", timeout_s, None)):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")
        if not (number >= 0 if low == 0.0 else number > 0) or number > 86400:
            raise DownloadError(f"{flag} {value!r}: must be a number of seconds {'>= 0' if low == 0.0 else '> 0'} "
                                "and at most a day (86400), e.g. 1 for the backoff, 60 for the timeout.")
    bad = [i for i in cases if not isinstance(i, int) or not 0 <= i < N_CASES]
    if bad or not cases:
        raise DownloadError(f"cases {bad or cases!r}: expected a non-empty list of case numbers in 0..{N_CASES - 1}.")
    created = [p for p in [Path(out), *Path(out).absolute().parents] if not p.exists()]
    root = ensure_writable_folder(out)
    book = ChecksumBook(root)
    jobs = plan_downloads(cases, imaging_url, segmentation_url, interpolated, segmentation)
    bar = _Progress(len(jobs), enabled=progress)
    try:
        results, failures = _run_jobs(jobs, root, book, workers, bar, retries=retries, backoff_s=backoff_s,
                                      timeout_s=timeout_s)
    except BaseException:
        _remove_empty_folders(created)
        raise
    finally:
        bar.close()
    if failures:  # a ChecksumMismatchError when that is the only kind of failure, for callers to catch
        _remove_empty_folders(created)
        if unresolved := [e for e in failures if isinstance(e, HostNotFoundError)]:
            raise unresolved[0]
        kind = ChecksumMismatchError if all(isinstance(e, ChecksumMismatchError) for e in failures) else DownloadError
        lines = sorted(map(str, failures))        # one line per file: hundreds when the network is down
        more = [f"... and {len(lines) - 5} more files (all listed by --dry-run)"] if len(lines) > 5 else []
        raise kind(f"{len(failures)} of {len(jobs)} files failed:\n  " + "\n  ".join(lines[:5] + more))
    if missing := check_layout(root, cases, segmentation):
        raise LayoutError(f"{root}: layout check failed, missing {len(missing)} file(s): {', '.join(missing[:10])}"
                          f"{' ...' if len(missing) > 10 else ''}. Run the same command again.")
    return results


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Download KiTS19 CT cases into OUT/case_XXXXX/{imaging,segmentation}.nii.gz "
        "(parallel, resumable, checksum-verified).")
    p.add_argument("--cases", default=f"0-{N_LABELLED_CASES - 1}",
                   help="case numbers and ranges, e.g. 0-119 or 0-9,15,20-22 or all "
                        f"(default 0-{N_LABELLED_CASES - 1}: "
                        f"the cases with segmentations; KiTS19 has 0..{N_CASES - 1})")
    p.add_argument("--out", type=Path, default=Path("data/kits19"), help="output folder (default data/kits19)")
    p.add_argument("--interpolated", action="store_true",
                   help="the kits19 'interpolated' variant: every case resampled to 3 x 0.78 x 0.78 mm")
    p.add_argument("--imaging-url", help="base URL holding case_XXXXX.nii.gz, or a template with {case}/{index} "
                                         f"(default {IMAGING_URL})")
    p.add_argument("--segmentation-url", help="base URL holding case_XXXXX/segmentation.nii.gz, or a template "
                                              f"(default {SEGMENTATION_URL})")
    p.add_argument("--no-segmentation", action="store_true", help="download images only")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--retries", type=int, default=3, help="extra attempts per file (default 3)")
    p.add_argument("--backoff-seconds", type=float, default=1.0,
                   help="wait before retry k is this * 2**k seconds (default 1)")
    p.add_argument("--timeout-seconds", type=float, default=60.0, help="socket timeout (default 60)")
    p.add_argument("--dry-run", action="store_true", help="print the URL -> file plan and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _summary(results: list[DownloadResult], out: Path, n_cases: int) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    size_mb = sum(r.size_bytes for r in results) / 2**20
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return f"{len(results)} files ({size_mb:.1f} MiB) in {out} [{parts}]; layout OK for {n_cases} cases"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    "Command-line entry point; returns 0 on success, 2 on an error (printed as one paragraph)."
    args = build_parser(prog).parse_args(argv)
    name = prog or "download_kits19"
    in_main = threading.current_thread() is threading.main_thread()
    python_term = signal.getsignal(signal.SIGTERM) if in_main else None
    if in_main and python_term in (signal.SIG_DFL, None):     # `kill`, `timeout`, Slurm: stop as on Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        cases = parse_cases(args.cases)
        if not args.no_segmentation and (unlabelled := [i for i in cases if i >= N_LABELLED_CASES]):
            print(f"{name}: note: {len(unlabelled)} requested case(s) >= {N_LABELLED_CASES} belong to the KiTS19 "
                  "test set, which has no public segmentation: imaging only for those.", file=sys.stderr)
        if args.dry_run:
            for job in plan_downloads(cases, args.imaging_url, args.segmentation_url, args.interpolated,
                                      not args.no_segmentation):
                print(f"{job.url} -> {args.out / job.relpath}")
            return 0
        print(f"{name}: the KiTS19 data is licensed CC BY-NC-SA 4.0 (non-commercial use, attribution, share-alike; "
              "cite Heller et al., arXiv:1904.00445): https://kits19.grand-challenge.org/data/", file=sys.stderr)
        results = download_cases(cases, args.out, args.imaging_url, args.segmentation_url, args.interpolated,
                                 not args.no_segmentation, args.workers, args.retries, args.backoff_seconds,
                                 args.timeout_seconds, progress=not args.quiet)
    except DownloadError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if in_main and python_term in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(_summary(results, args.out, len(cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
