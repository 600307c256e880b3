"""Real-browser test of the SliceViewer: JupyterLab + headless Chromium driven by Playwright.

Starts JupyterLab on 127.0.0.1 (free port, random token) in a temporary copy of tests/browser/,
opens viewer.ipynb, runs all cells, moves the slice slider with the keyboard and with the mouse,
and checks that the displayed image changes and that no error output appears. The screenshot is
saved under test_artifacts/ (gitignored). JupyterLab is stopped in a `finally`.

Chromium comes from Debian (`apt-get install chromium`, done by `make browser`); the Playwright pip
package ships its own driver, so `playwright install` is never needed. Skipped, with the reason,
only when no Chromium executable can be found.
"""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test_artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path):
    "A JupyterLab server serving a copy of tests/browser; yields (base_url, token); stopped afterwards."
    root = tmp_path / "lab"
    shutil.copytree(ROOT / "tests" / "browser", root)
    port, token = free_port(), secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), MPLBACKEND="Agg",
               PYTHONWARNINGS="ignore::DeprecationWarning", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip", "127.0.0.1",
           "--port", str(port), f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--LabApp.news_url=", "--ServerApp.open_browser=False",
           f"--LabApp.user_settings_dir={tmp_path / 'settings'}",      # leave ~/.jupyter untouched
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")                       # containers and CI often run as root
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}", token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)          # the server and the kernels it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def image_state(page):
    "(src, screenshot bytes) of the viewer's picture."
    img = page.locator(".jp-OutputArea-output img.widget-image, .jp-OutputArea-output .widget-image").first
    return img.get_attribute("src"), img.screenshot()


def loaded(page) -> bool:
    return page.evaluate("() => { const i = document.querySelector('.jp-OutputArea-output .widget-image');"
                         " return !!i && i.complete && i.naturalWidth > 0; }")


def stable_state(page, timeout: float = 30):
    "The picture's (src, screenshot) once two looks 300 ms apart agree (no update in flight)."
    deadline, prev = time.time() + timeout, None
    while time.time() < deadline:
        now = image_state(page) if loaded(page) else None
        if now is not None and now == prev:
            return now
        prev = now
        page.wait_for_timeout(300)
    raise AssertionError("the viewer's picture did not settle")


def wait_for_change(page, before, timeout: float = 30):
    "Wait until the kernel has sent a new picture (new src) that looks different, then let it settle."
    deadline = time.time() + timeout
    while time.time() < deadline:
        if loaded(page):
            src, shot = image_state(page)
            if src != before[0] and shot != before[1]:
                return stable_state(page)
        page.wait_for_timeout(250)
    raise AssertionError("the displayed image did not change after moving the slider")


def slider_value(page) -> int:
    "The slice slider's readout (the first slider labelled 'slice')."
    slider = page.locator(".widget-slider", has=page.locator("label", has_text="slice")).first
    return int(slider.locator(".widget-readout").inner_text().strip())


def test_slice_viewer_in_jupyterlab(jupyterlab):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium executable (/usr/bin/chromium); install it with `make browser` "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    ARTIFACTS.mkdir(exist_ok=True)
    console_errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/lab/tree/viewer.ipynb?token={token}", timeout=120_000)
            page.locator(".jp-NotebookPanel").first.wait_for(timeout=120_000)
            page.locator(".jp-Notebook-cell").first.wait_for(timeout=60_000)
            # wait until the kernel is connected and idle (status bar), then Run ▸ Run All Cells
            page.get_by_text("| Idle").first.wait_for(timeout=120_000)
            page.wait_for_timeout(1000)
            dismiss = page.get_by_role("button", name="No", exact=True)      # the "Jupyter news?" toast
            if dismiss.count():
                dismiss.first.click()
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            img = page.locator(".jp-OutputArea-output .widget-image").first
            img.wait_for(timeout=180_000)
            before = stable_state(page, timeout=60)
            start_value = slider_value(page)

            # keyboard: focus the slider handle and step three slices up
            handle = page.locator(".widget-slider", has=page.locator("label", has_text="slice")).first \
                .locator(".noUi-handle").first
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            after_keys = wait_for_change(page, before)                # a new picture from the kernel
            assert slider_value(page) == start_value + 3

            # mouse: drag the handle to the left end of the track
            track = page.locator(".widget-slider", has=page.locator("label", has_text="slice")).first \
                .locator(".noUi-target").first
            box, hbox = track.bounding_box(), handle.bounding_box()
            page.mouse.move(hbox["x"] + hbox["width"] / 2, hbox["y"] + hbox["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 20, hbox["y"] + hbox["height"] / 2, steps=8)
            page.mouse.up()
            wait_for_change(page, after_keys)
            assert slider_value(page) == 0

            page.screenshot(path=str(ARTIFACTS / "browser_slice_viewer.png"), full_page=True)
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            errors = [t for t in outputs if "Traceback" in t or "Error" in t]
            assert not errors, f"error output in the notebook: {errors}"
            stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert stderr.count() == 0, f"stderr output: {stderr.all_inner_texts()}"
            widget_errors = [m for m in console_errors if "widget" in m.lower() or "model" in m.lower()]
            assert not widget_errors, f"widget errors in the browser console: {widget_errors}"
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_slice_viewer_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
