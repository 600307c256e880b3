"""data_scripts/download_kits19.py against a local HTTP server on 127.0.0.1 (no other network).

The server (a thread running an http.server subclass) serves small KiTS-like .nii.gz files,
honours `Range: bytes=N-` with 206 answers, and can be told to cut one answer mid-body, ignore
Range headers, fail once with a 5xx, or serve changed bytes.
"""
import gzip
import hashlib
import random
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_scripts"))
import download_kits19 as dk  # noqa: E402
from download_kits19 import download_cases, main  # noqa: E402


# ---------------------------------------------------------------------------------------------
# A KiTS19-like server
# ---------------------------------------------------------------------------------------------
class _KitsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.server.state
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append((self.path, rng))
            body = st.files.get(self.path)
            drop = self.path in st.drop_once
            st.drop_once.discard(self.path)
            fail = st.fail_once.pop(self.path, None)
            wrong_start = st.wrong_range_start_once
            st.wrong_range_start_once = False
        if fail is not None:
            return self._plain(fail, b"busy")
        if body is None:
            return self._plain(404, b"Not Found")
        start, status = 0, 200
        if rng and not st.ignore_range:
            start = 0 if wrong_start else int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        payload = body[start:]
        if drop:  # announce everything, send half, hang up: a dropped connection
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True
            return
        step = 8192 if st.slow else len(payload)
        try:
            for i in range(0, len(payload), step):
                self.wfile.write(payload[i:i + step])
                if st.slow:
                    time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):  # the client went away (the Ctrl-C test)
            self.close_connection = True

    def _plain(self, code, text):
        self.send_response(code)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: set[str] = set()
        self.fail_once: dict[str, int] = {}
        self.ignore_range = False
        self.wrong_range_start_once = False  # next ranged answer: 206 starting at byte 0
        self.slow = False  # send 8 KiB every 10 ms


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _KitsHandler)
    httpd.daemon_threads = True
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def fake_nii_gz(seed: int, n_bytes: int = 150_000) -> bytes:
    "gzip bytes of a NIfTI-1 sizeof_hdr (348) and pseudo-random content (incompressible, so the size is ~n_bytes)."
    return gzip.compress((348).to_bytes(4, "little") + random.Random(seed).randbytes(n_bytes), mtime=0)


def serve_cases(server, cases, labelled=True):
    "Put imaging (and segmentation for cases < 210) on the server in the KiTS19 mirror layout."
    for i in cases:
        server.state.files[f"/images/case_{i:05d}.nii.gz"] = fake_nii_gz(i)
        if labelled and i < 210:
            server.state.files[f"/data/case_{i:05d}/segmentation.nii.gz"] = fake_nii_gz(1000 + i, 20_000)


def urls(server):
    return dict(imaging_url=server.base + "/images", segmentation_url=server.base + "/data")


def fast(**kw):
    "Keyword arguments for quick tests: no bar, tiny backoff, short timeout."
    return dict(progress=False, backoff_s=0.01, timeout_s=5, **kw)


def cli_args(server, out, *extra):
    return ["--out", str(out), "--imaging-url", server.base + "/images", "--segmentation-url", server.base + "/data",
            "--quiet", "--backoff-seconds", "0.01", *extra]


# ---------------------------------------------------------------------------------------------
# Case specs and URL plans (no server)
# ---------------------------------------------------------------------------------------------
def test_parse_cases_ranges_and_lists():
    assert dk.parse_cases("0-9,15,20-22") == list(range(10)) + [15, 20, 21, 22]
    assert dk.parse_cases(" 3, 1-2 ,3 ") == [1, 2, 3]
    assert dk.parse_cases("0-119") == list(range(120))
    assert dk.parse_cases("299") == [299]
    assert dk.parse_cases("all") == list(range(300))


@pytest.mark.parametrize("spec, message", [
    ("", "empty case list"), ("1,,2", "'' is not a case number"), ("abc", "'abc' is not a case number"),
    ("-3", "'-3' is not a case number"), ("5-3", "Write it as '3-5'"), ("0-300", "case 300 does not exist"),
    ("1-2-3", "not a case number or a range")])
def test_parse_cases_errors(spec, message):
    with pytest.raises(dk.DownloadError, match=re.escape(message)) as info:
        dk.parse_cases(spec)
    assert f"--cases {spec!r}" in str(info.value)


def test_plan_default_and_interpolated_urls():
    jobs = dk.plan_downloads([3, 250])
    assert [j.relpath for j in jobs] == ["case_00003/imaging.nii.gz", "case_00250/imaging.nii.gz",
                                         "case_00003/segmentation.nii.gz"]  # no segmentation for test cases
    assert jobs[0].url == dk.IMAGING_URL + "/case_00003.nii.gz"
    assert jobs[2].url == "https://raw.githubusercontent.com/neheller/kits19/master/data/case_00003/segmentation.nii.gz"
    interp = dk.plan_downloads([3], interpolated=True)
    assert interp[0].url.endswith("/interpolated/images/case_00003.nii.gz")
    assert "/kits19/interpolated/data/case_00003/segmentation.nii.gz" in interp[1].url
    assert [j.relpath for j in dk.plan_downloads([3], segmentation=False)] == ["case_00003/imaging.nii.gz"]


def test_plan_url_templates():
    jobs = dk.plan_downloads([7], imaging_url="http://m/master_{index:05d}.nii.gz",
                             segmentation_url="http://s/{case}.seg")
    assert [j.url for j in jobs] == ["http://m/master_00007.nii.gz", "http://s/case_00007.seg"]
    with pytest.raises(dk.DownloadError, match=r"URL template 'http://m/\{cid\}'.*\{case\}"):
        dk.plan_downloads([7], imaging_url="http://m/{cid}")


# ---------------------------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------------------------
def test_download_writes_kits19_layout_and_checksums(server, tmp_path):
    serve_cases(server, [0, 1, 210])
    out = tmp_path / "kits"
    results = download_cases([0, 1, 210], out, workers=3, **urls(server), **fast())
    assert {r.status for r in results} == {"downloaded"} and len(results) == 5
    for i in (0, 1, 210):
        assert (out / f"case_{i:05d}/imaging.nii.gz").read_bytes() == server.state.files[f"/images/case_{i:05d}.nii.gz"]
    served = server.state.files["/data/case_00001/segmentation.nii.gz"]
    assert (out / "case_00001/segmentation.nii.gz").read_bytes() == served
    assert not (out / "case_00210/segmentation.nii.gz").exists()
    assert not list(out.rglob("*.part")) and not list(out.glob(".*tmp"))
    # checksums.sha256 is in `sha256sum` format and matches hashlib on the served bytes
    lines = (out / "checksums.sha256").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        digest, rel = line.split("  ")
        assert digest == hashlib.sha256((out / rel).read_bytes()).hexdigest()
    # a second run touches no server and verifies every file
    n_requests = len(server.state.requests)
    again = download_cases([0, 1, 210], out, **urls(server), **fast())
    assert {r.status for r in again} == {"verified"} and len(server.state.requests) == n_requests


def test_downloaded_folder_opens_as_dataset(server, tmp_path):
    "Real NIfTI bytes in, a KiTS19 dataset out that miscnn_lite.io reads."
    io = pytest.importorskip("miscnn_lite.io")
    src = tmp_path / "src"
    label = np.zeros((4, 8, 8), np.uint8)
    label[1:3, 2:5, 2:5] = 1
    image = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8) - 100
    io.save_case(io.case_from_arrays(image, label, spacing=(3.0, 1.5, 1.5), case_id="case_00004"), src)
    server.state.files["/images/case_00004.nii.gz"] = (src / "case_00004/imaging.nii.gz").read_bytes()
    server.state.files["/data/case_00004/segmentation.nii.gz"] = (src / "case_00004/segmentation.nii.gz").read_bytes()
    download_cases([4], tmp_path / "out", **urls(server), **fast())
    case = io.open_dataset(tmp_path / "out").load_case("case_00004")
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    np.testing.assert_allclose(case.spacing, (3.0, 1.5, 1.5))


def test_resume_after_dropped_connection(server, tmp_path):
    serve_cases(server, [0])
    path = "/images/case_00000.nii.gz"
    body = server.state.files[path]
    server.state.drop_once.add(path)
    results = download_cases([0], tmp_path, retries=2, **urls(server), **fast())
    image = next(r for r in results if r.relpath == "case_00000/imaging.nii.gz")
    assert (tmp_path / "case_00000/imaging.nii.gz").read_bytes() == body
    # first answer cut after half the body; the retry asked only for the rest
    assert [rng for p, rng in server.state.requests if p == path] == [None, f"bytes={len(body) // 2}-"]
    assert image.status == "resumed" and image.resumed_from_bytes == len(body) // 2
    assert image.sha256 == hashlib.sha256(body).hexdigest()


def test_resume_part_file_from_an_earlier_run(server, tmp_path):
    serve_cases(server, [2], labelled=False)
    body = server.state.files["/images/case_00002.nii.gz"]
    (tmp_path / "case_00002").mkdir()
    (tmp_path / "case_00002/imaging.nii.gz.part").write_bytes(body[:1000])
    [result] = download_cases([2], tmp_path, segmentation=False, **urls(server), **fast())
    assert server.state.requests == [("/images/case_00002.nii.gz", "bytes=1000-")]
    assert result.status == "resumed" and (tmp_path / "case_00002/imaging.nii.gz").read_bytes() == body
    assert not (tmp_path / "case_00002/imaging.nii.gz.part").exists()


def test_complete_part_file_gets_416_and_is_kept(server, tmp_path):
    serve_cases(server, [2], labelled=False)
    body = server.state.files["/images/case_00002.nii.gz"]
    (tmp_path / "case_00002").mkdir()
    (tmp_path / "case_00002/imaging.nii.gz.part").write_bytes(body)
    [result] = download_cases([2], tmp_path, segmentation=False, **urls(server), **fast())
    assert result.status == "resumed" and (tmp_path / "case_00002/imaging.nii.gz").read_bytes() == body


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    "200 instead of 206: the whole body comes again and must replace, not extend, the .part file."
    serve_cases(server, [2], labelled=False)
    server.state.ignore_range = True
    body = server.state.files["/images/case_00002.nii.gz"]
    (tmp_path / "case_00002").mkdir()
    (tmp_path / "case_00002/imaging.nii.gz.part").write_bytes(body[:1000])
    [result] = download_cases([2], tmp_path, segmentation=False, **urls(server), **fast())
    assert result.status == "downloaded" and (tmp_path / "case_00002/imaging.nii.gz").read_bytes() == body


def test_206_from_the_wrong_offset_restarts_the_file(server, tmp_path):
    "A 206 whose Content-Range does not start where the .part ends would corrupt the file if appended."
    serve_cases(server, [2], labelled=False)
    server.state.wrong_range_start_once = True
    body = server.state.files["/images/case_00002.nii.gz"]
    (tmp_path / "case_00002").mkdir()
    (tmp_path / "case_00002/imaging.nii.gz.part").write_bytes(body[:1000])
    [result] = download_cases([2], tmp_path, segmentation=False, retries=1, **urls(server), **fast())
    assert [rng for _, rng in server.state.requests] == ["bytes=1000-", None]
    assert result.status == "downloaded" and (tmp_path / "case_00002/imaging.nii.gz").read_bytes() == body


def test_transient_503_is_retried(server, tmp_path):
    serve_cases(server, [5], labelled=False)
    server.state.fail_once["/images/case_00005.nii.gz"] = 503
    [result] = download_cases([5], tmp_path, segmentation=False, retries=1, **urls(server), **fast())
    assert result.status == "downloaded" and len(server.state.requests) == 2


def test_dropped_connections_beyond_retries_keep_the_part_file(server, tmp_path):
    serve_cases(server, [5], labelled=False)
    server.state.fail_once["/images/case_00005.nii.gz"] = 503
    with pytest.raises(dk.DownloadError, match=r"case_00005.nii.gz: failed after 1 attempts.*HTTP 503.*--retries"):
        download_cases([5], tmp_path, segmentation=False, retries=0, **urls(server), **fast())
    server.state.drop_once.add("/images/case_00005.nii.gz")
    with pytest.raises(dk.DownloadError, match=r"partial file .*imaging.nii.gz.part is kept"):
        download_cases([5], tmp_path, segmentation=False, retries=0, **urls(server), **fast())
    [result] = download_cases([5], tmp_path, segmentation=False, retries=0, **urls(server), **fast())
    assert result.status == "resumed"


def test_corrupted_local_file_is_detected_and_redownloaded(server, tmp_path):
    serve_cases(server, [0])
    download_cases([0], tmp_path, **urls(server), **fast())
    image = tmp_path / "case_00000/imaging.nii.gz"
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")  # same size, different bytes
    results = {r.relpath: r.status for r in download_cases([0], tmp_path, **urls(server), **fast())}
    assert results == {"case_00000/imaging.nii.gz": "repaired", "case_00000/segmentation.nii.gz": "verified"}
    assert image.read_bytes() == server.state.files["/images/case_00000.nii.gz"]


def test_changed_server_file_is_a_checksum_error(server, tmp_path):
    serve_cases(server, [0], labelled=False)
    download_cases([0], tmp_path, segmentation=False, **urls(server), **fast())
    first = hashlib.sha256(server.state.files["/images/case_00000.nii.gz"]).hexdigest()
    image = tmp_path / "case_00000/imaging.nii.gz"
    image.write_bytes(b"\x1f\x8b damaged")
    server.state.files["/images/case_00000.nii.gz"] = fake_nii_gz(99)  # the server now sends other bytes
    with pytest.raises(dk.ChecksumMismatchError) as info:
        download_cases([0], tmp_path, segmentation=False, retries=1, **urls(server), **fast())
    message = str(info.value)
    assert "checksum mismatch after 2 attempts" in message and first in message
    assert hashlib.sha256(fake_nii_gz(99)).hexdigest() in message
    assert "delete the line for case_00000/imaging.nii.gz" in message
    assert not image.exists() and not list(tmp_path.rglob("*.part"))
    assert len(server.state.requests) == 1 + 2  # first download, then two attempts
    # through the command line: one-paragraph error, exit status 2
    assert main(cli_args(server, tmp_path, "--cases", "0", "--no-segmentation", "--retries", "0")) == 2


def test_404_names_the_url_and_other_files_finish(server, tmp_path, capsys):
    serve_cases(server, [0, 1])
    del server.state.files["/data/case_00001/segmentation.nii.gz"]
    with pytest.raises(dk.DownloadError) as info:
        download_cases([0, 1], tmp_path, **urls(server), **fast())
    assert f"{server.base}/data/case_00001/segmentation.nii.gz: HTTP 404" in str(info.value)
    assert "1 of 4 files failed" in str(info.value)
    assert sum(p == "/data/case_00001/segmentation.nii.gz" for p, _ in server.state.requests) == 1  # no retries
    assert (tmp_path / "case_00001/imaging.nii.gz").is_file()
    assert (tmp_path / "case_00000/segmentation.nii.gz").is_file()
    assert main(cli_args(server, tmp_path, "--cases", "0-1")) == 2
    err = capsys.readouterr().err
    assert "download_kits19: error:" in err and "case_00001/segmentation.nii.gz: HTTP 404" in err
    assert "Traceback" not in err and "licensed CC BY-NC-SA 4.0" in err        # the user is told the terms



def test_a_download_that_gets_nothing_is_short_and_leaves_no_folder(server, tmp_path):
    "Every file failing (no network): five lines and a count, not one line per file; no empty --out left."
    serve_cases(server, [0, 1, 2])
    server.state.files.clear()
    with pytest.raises(dk.DownloadError) as info:
        download_cases([0, 1, 2], tmp_path / "new" / "k19", **urls(server), **fast())
    text = str(info.value)
    assert "6 of 6 files failed" in text and "... and 1 more files" in text and text.count("HTTP 404") == 5
    assert not (tmp_path / "new").exists()


def test_not_gzip_and_lfs_pointer_are_refused(server, tmp_path):
    server.state.files["/images/case_00000.nii.gz"] = b"<html>login</html>"
    server.state.files["/data/case_00000/segmentation.nii.gz"] = (b"version https://git-lfs.github.com/spec/v1\n"
                                                                  b"oid sha256:ab\n")
    with pytest.raises(dk.DownloadError) as info:
        download_cases([0], tmp_path, **urls(server), **fast())
    assert "not a gzip-compressed NIfTI" in str(info.value) and "Git LFS pointer" in str(info.value)
    assert dk.LFS_MEDIA_SEGMENTATION_URL in str(info.value)
    assert not list((tmp_path / "case_00000").iterdir())


def test_gzip_that_is_not_nifti_is_refused(server, tmp_path):
    "A gzip file of something else (a tarball, a CSV): its first field is no NIfTI header size."
    serve_cases(server, [0])
    server.state.files["/images/case_00000.nii.gz"] = gzip.compress(b"case,volume\n0,12\n" * 100, mtime=0)
    with pytest.raises(dk.DownloadError, match="gzip data that is not a NIfTI file"):
        download_cases([0], tmp_path / "k", **urls(server), **fast())
    assert not (tmp_path / "k" / "case_00000" / "imaging.nii.gz").exists()
    big_endian = gzip.compress((348).to_bytes(4, "big") + b"\0" * 400, mtime=0)     # NIfTI allows either order
    server.state.files["/images/case_00000.nii.gz"] = big_endian
    download_cases([0], tmp_path / "k", **urls(server), **fast())
    assert (tmp_path / "k" / "case_00000" / "imaging.nii.gz").read_bytes() == big_endian


@pytest.mark.parametrize("option, value", [("--timeout-seconds", "-5"), ("--timeout-seconds", "nan"),
                                           ("--timeout-seconds", "inf"), ("--timeout-seconds", "0"),
                                           ("--backoff-seconds", "-1")])
def test_bad_timeouts_are_named_and_leave_no_folder(tmp_path, capsys, option, value):
    assert main(["--cases", "0", "--out", str(tmp_path / "new" / "k"), option, value, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{option} " in err and "seconds" in err
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------
# Safety, layout, bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil.nii.gz", "/etc/passwd", "case_00000/../../x", "C:/x", "a\\..\\b", "", ".",
                                  "case_00000/.."])
def test_names_leaving_the_folder_are_refused(tmp_path, name):
    with pytest.raises(dk.UnsafePathError, match="leaves the output folder"):
        dk.resolve_inside(tmp_path, name)


def test_symlink_out_of_the_folder_is_refused(server, tmp_path):
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir(), out.mkdir()
    (out / "case_00000").symlink_to(outside)
    assert dk.resolve_inside(out, "case_00001/imaging.nii.gz") == out.resolve() / "case_00001/imaging.nii.gz"
    serve_cases(server, [0], labelled=False)
    with pytest.raises(dk.DownloadError, match="refusing a file name that leaves"):
        download_cases([0], out, segmentation=False, **urls(server), **fast())
    assert not list(outside.iterdir()) and server.state.requests == []
    job = dk.DownloadJob(server.base + "/images/case_00000.nii.gz", "../evil.nii.gz")
    with pytest.raises(dk.UnsafePathError):
        dk.download_file(job, out)
    assert not (tmp_path / "evil.nii.gz").exists()


def test_checksum_file_pointing_outside_or_malformed_is_refused(tmp_path):
    (tmp_path / "checksums.sha256").write_text("0" * 64 + "  ../../etc/passwd\n")
    with pytest.raises(dk.UnsafePathError, match="'../../etc/passwd'"):
        dk.ChecksumBook(tmp_path)
    (tmp_path / "checksums.sha256").write_text("\nnot a checksum line\n")
    with pytest.raises(dk.DownloadError, match=r"checksums.sha256:2: 'not a checksum line'.*Fix or delete"):
        dk.ChecksumBook(tmp_path)


def test_layout_check(tmp_path):
    for rel in ["case_00000/imaging.nii.gz", "case_00000/segmentation.nii.gz", "case_00001/imaging.nii.gz",
                "case_00250/imaging.nii.gz"]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "case_00002").mkdir()
    (tmp_path / "case_00002/imaging.nii.gz").write_bytes(b"")  # empty counts as missing
    assert dk.check_layout(tmp_path, [0, 250]) == []  # test cases need no segmentation
    assert dk.check_layout(tmp_path, [0, 1, 2, 3]) == [
        "case_00001/segmentation.nii.gz", "case_00002/imaging.nii.gz", "case_00002/segmentation.nii.gz",
        "case_00003/imaging.nii.gz", "case_00003/segmentation.nii.gz"]
    assert dk.check_layout(tmp_path, [0, 1], segmentation=False) == []


def test_layout_failure_is_reported(server, tmp_path, monkeypatch):
    serve_cases(server, [0], labelled=False)
    monkeypatch.setattr(dk, "check_layout", lambda root, cases, seg: ["case_00000/imaging.nii.gz"])
    with pytest.raises(dk.LayoutError, match=r"layout check failed, missing 1 file\(s\): case_00000/imaging.nii.gz"):
        download_cases([0], tmp_path, segmentation=False, **urls(server), **fast())


def test_out_folder_errors(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--cases", "0", "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    with pytest.raises(dk.DownloadError, match="exists and is not a folder"):
        dk.ensure_writable_folder(blocker)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(dk.tempfile, "mkstemp", refuse)  # root ignores chmod, so simulate it
    with pytest.raises(dk.DownloadError, match=r"--out .*ro: the folder is not writable \(Permission denied\)"):
        dk.ensure_writable_folder(tmp_path / "ro")


def test_bad_numbers_of_workers_and_retries(tmp_path):
    with pytest.raises(dk.DownloadError, match=r"--workers 0: must be an integer >= 1"):
        download_cases([0], tmp_path, workers=0, progress=False)
    with pytest.raises(dk.DownloadError, match=r"--retries -1: must be an integer >= 0"):
        download_cases([0], tmp_path, retries=-1, progress=False)
    with pytest.raises(dk.DownloadError, match=r"0\.\.299"):
        download_cases([300], tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------
# The script as a user runs it
# ---------------------------------------------------------------------------------------------
def test_script_from_the_command_line(server, tmp_path):
    serve_cases(server, [0, 1, 215])
    script = ROOT / "data_scripts" / "download_kits19.py"
    run = subprocess.run([sys.executable, str(script), *cli_args(server, tmp_path / "k", "--cases", "0-1,215",
                                                                  "--workers", "2")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "5 files" in run.stdout and "downloaded: 5" in run.stdout and "layout OK for 3 cases" in run.stdout
    assert "1 requested case(s) >= 210" in run.stderr
    dry = subprocess.run([sys.executable, str(script), "--dry-run", "--cases", "7", "--interpolated"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "interpolated/images/case_00007.nii.gz" in dry.stdout
    bad = subprocess.run([sys.executable, str(script), "--cases", "7-x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'7-x' is not a case number" in bad.stderr and "Traceback" not in bad.stderr


def test_loads_from_its_path():
    "The script also runs when loaded by path, without being registered in sys.modules first."
    import importlib.util
    spec = importlib.util.spec_from_file_location("kits19_download_by_path",
                                                  ROOT / "data_scripts" / "download_kits19.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--dry-run", "--cases", "0", "--no-segmentation"], prog="miscnn-lite download kits19") == 0


def test_the_console_script_runs_the_shipped_copy():
    "`miscnn-lite download kits19` imports miscnn_lite.bundled._download_kits19, a copy of this script (make bundle)."
    from miscnn_lite.bundled import _download_kits19 as shipped
    assert Path(shipped.__file__).read_bytes() == (ROOT / "data_scripts" / "download_kits19.py").read_bytes()
    assert shipped.main(["--dry-run", "--cases", "0", "--no-segmentation"], prog="miscnn-lite download kits19") == 0


def test_ctrl_c_keeps_the_part_file_and_the_next_run_resumes(server, tmp_path):
    serve_cases(server, [0], labelled=False)
    server.state.slow = True  # 1.5 MB at 8 KiB / 10 ms: about 2 s, time to press Ctrl-C
    server.state.files["/images/case_00000.nii.gz"] = body = fake_nii_gz(0, 1_500_000)
    part = tmp_path / "case_00000/imaging.nii.gz.part"
    proc = subprocess.Popen([sys.executable, str(ROOT / "data_scripts" / "download_kits19.py"),
                             *cli_args(server, tmp_path, "--cases", "0", "--no-segmentation")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job (`make test &`) starts with SIGINT ignored, and a
                            # child inherits that; the script must see Ctrl-C as a terminal user would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size > 100_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted; run the same command again to resume" in err, err
    kept = part.stat().st_size
    assert 0 < kept < len(body) and not (tmp_path / "case_00000/imaging.nii.gz").exists()
    server.state.slow = False
    [result] = download_cases([0], tmp_path, segmentation=False, **urls(server), **fast())
    assert result.status == "resumed" and result.resumed_from_bytes == kept
    assert (tmp_path / "case_00000/imaging.nii.gz").read_bytes() == body


def test_unresolvable_host_says_network_and_leaves_no_empty_case_folder(tmp_path):
    job = dk.DownloadJob("http://no-such-host.invalid/case_00000/imaging.nii.gz", "case_00000/imaging.nii.gz")
    with pytest.raises(dk.DownloadError, match="cannot be resolved .*check the network connection, the proxy"):
        dk.download_file(job, tmp_path, retries=0, backoff_s=0, timeout_s=5)
    assert not (tmp_path / "case_00000").exists()


def test_a_host_that_does_not_resolve_stops_the_run_at_once(tmp_path, monkeypatch):
    "No network (or a mistyped host): no retry helps, so the first file's answer ends the run, with no empty folder."
    import socket
    import urllib.error
    calls = []

    def unresolvable(url, offset, timeout_s):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    monkeypatch.setattr(dk, "_open", unresolvable)
    out = tmp_path / "new" / "kits19"
    t = time.monotonic()
    with pytest.raises(dk.HostNotFoundError, match=r"the host name 'kits19\.invalid' cannot be resolved \(Name or "
                                                   r"service not known\): check the network connection"):
        download_cases(list(range(40)), out, imaging_url="http://kits19.invalid/images",
                       segmentation_url="http://kits19.invalid/data", workers=4, retries=3, backoff_s=1.0,
                       progress=False)
    assert time.monotonic() - t < 5 and len(calls) <= 4 * 2           # no backoff, no retry, the other files dropped
    assert not (tmp_path / "new").exists()                            # the folders this run created are gone
    assert main(["--cases", "0-3", "--out", str(out), "--quiet", "--imaging-url", "http://kits19.invalid/images",
                 "--segmentation-url", "http://kits19.invalid/data"]) == 2
