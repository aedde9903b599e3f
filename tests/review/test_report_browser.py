"""The review report in a real browser: headless Chromium driven over the DevTools protocol.

Chromium: Debian's ``chromium`` package (``/usr/bin/chromium``, installed by ``make system-deps``), any
``chromium`` / ``google-chrome`` on ``PATH``, or ``$MEDSEG_CHROMIUM``. The tests never install anything:
where no browser is found they skip with the install hint.

The DevTools protocol is spoken over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4), so no websocket client or browser-driver package is needed. Checks: the page
loads without console errors or exceptions, every image is displayed (``naturalWidth > 0``), a
``<script>`` case id stays text, default order is most uncertain first, accept / needs-correction +
comment are saved (and survive a reload), and the CSV / JSON exports (a real Blob download) hold the
feedback. A screenshot is saved as ``test-artifacts/review_report.png``.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from medseg.review.report import write_report

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find_chromium() -> str | None:
    env = os.environ.get("MEDSEG_CHROMIUM")
    if env and Path(env).is_file():
        return env
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    for name in _CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = _find_chromium()
    if binary is None:
        pytest.skip(
            "headless Chromium not found: run `make system-deps` (Debian package chromium) or set $MEDSEG_CHROMIUM"
        )
    return binary


class CDP:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fd 3: to chrome, fd 4: from)."""

    def __init__(self, binary: str, profile: Path, log_path: Path):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # move the child's ends above fd 10 so dup2 onto 3 and 4 cannot clobber them
        c_in, c_out = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)

        def child_fds():
            os.dup2(c_in, 3)
            os.dup2(c_out, 4)

        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(3, 4),
            preexec_fn=child_fds,
            close_fds=True,
        )
        os.close(c_in)
        os.close(c_out)
        self._w, self._r = to_w, from_r
        self._id = 0
        self._responses: dict[int, dict] = {}
        self._cond = threading.Condition()
        self.events: list[dict] = []
        self._events_q: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._responses[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0):
        with self._cond:
            self._id += 1
            mid = self._id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no answer to {method} (chromium exit code {self.proc.poll()})")
                self._cond.wait(min(left, 0.5))
            resp = self._responses.pop(mid)
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    def wait_event(self, method: str, pred=lambda e: True, timeout: float = 30.0, start: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[start:]:
                    if e.get("method") == method and pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {method} event")
                self._cond.wait(min(left, 0.5))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


def _errors(cdp: CDP) -> list[str]:
    out = []
    for e in cdp.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
            )
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def _page(cdp: CDP, report: Path, downloads: Path | None = None):
    """Open a page session; returns (ev(expr) -> value, load() -> None navigating to the report)."""
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for dom in ("Page.enable", "Runtime.enable", "Log.enable"):
        cdp.send(dom, session=sid)
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
        session=sid,
    )
    if downloads is not None:
        cdp.send(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True}
        )

    def ev(expr: str):
        r = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session=sid)
        if "exceptionDetails" in r:
            raise AssertionError(f"JS failed: {expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def load():
        n = len(cdp.events)
        cdp.send("Page.navigate", {"url": report.as_uri()}, session=sid)
        cdp.wait_event("Page.loadEventFired", lambda e: e.get("sessionId") == sid, start=n)
        ev("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def key(k: str):
        for typ in ("keyDown", "keyUp"):
            cdp.send(
                "Input.dispatchKeyEvent",
                {"type": typ, "key": k, "code": k if len(k) > 1 else f"Key{k.upper()}"},
                session=sid,
            )

    def screenshot(name: str):
        ARTIFACTS.mkdir(exist_ok=True)
        shot = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=sid)
        (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))

    return ev, load, key, screenshot


def test_report_in_headless_chromium(chromium, sample_run, evil_case_id, tmp_path):
    run_dir, cases = sample_run
    report = write_report(
        run_dir, cases, title="medseg review (browser test)", summary={"segmentation": {"status": "ok", "seconds": 1.5}}
    )
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    cdp = CDP(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        ev, load, _, screenshot = _page(cdp, report, downloads)
        load()
        # images displayed
        imgs = ev("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(imgs) >= 5 and all(c and w > 0 for c, w, _ in imgs), imgs
        # the <script> case id is text, and it did not run
        assert ev("window.__pwned === undefined") is True
        assert evil_case_id in ev("Array.from(document.querySelectorAll('.cid')).map(e => e.textContent)")
        # default order: most uncertain first, cases without a score (the skipped one) last
        order = ev("Array.from(document.querySelectorAll('#cases tbody tr')).map(r => r.dataset.case)")
        assert order == [evil_case_id, "img_003", "tile_007", "case_000", "case_bad"], order
        # sorting by another column works
        ev("document.querySelector('th[data-key=case]').click()")
        order = ev("Array.from(document.querySelectorAll('#cases tbody tr')).map(r => r.dataset.case)")
        assert order[0] == "tile_007" and order[-1] == evil_case_id  # descending by case id
        # feedback: accept one, needs correction + comment on another
        ev("document.querySelector('.fb[data-case=\"case_000\"] button[data-decision=accept]').click()")
        ev("""(() => { const b = document.querySelector('.fb[data-case="img_003"]');
                 b.querySelector('button[data-decision=needs_correction]').click();
                 const t = b.querySelector('textarea'); t.value = '=lesion missed, "left" side';
                 t.dispatchEvent(new Event('input', {bubbles: true})); })()""")
        assert ev("document.querySelector('.fb[data-case=\"case_000\"] .acc').classList.contains('on')") is True

        rows = list(csv.DictReader(io.StringIO(ev("medsegFeedback.toCSV()"))))
        by = {r["case_id"]: r for r in rows}
        assert set(by) == {"case_000", "img_003"}
        assert by["case_000"]["decision"] == "accept"
        assert by["img_003"]["decision"] == "needs_correction"
        assert by["img_003"]["comment"] == '\'=lesion missed, "left" side'  # formula neutralised, quotes kept
        assert by["img_003"]["uncertainty"] == "0.54" and by["img_003"]["task"] == "classification"
        data = json.loads(ev("medsegFeedback.toJSON()"))
        assert {f["case_id"]: f["decision"] for f in data["feedback"]} == {
            "case_000": "accept",
            "img_003": "needs_correction",
        }
        assert {f["case_id"]: f["comment"] for f in data["feedback"]}["img_003"] == '=lesion missed, "left" side'

        # saved in the browser: survives a reload
        load()
        assert (
            ev("document.querySelector('.fb[data-case=\"img_003\"] textarea').value") == '=lesion missed, "left" side'
        )
        assert ev("document.querySelector('.fb[data-case=\"img_003\"] .cor').classList.contains('on')") is True

        # export = a real download of a Blob
        n = len(cdp.events)
        ev("document.getElementById('export-csv').click()")
        cdp.wait_event("Browser.downloadProgress", lambda e: e["params"].get("state") == "completed", start=n)
        n = len(cdp.events)
        ev("document.getElementById('export-json').click()")
        cdp.wait_event("Browser.downloadProgress", lambda e: e["params"].get("state") == "completed", start=n)
        got = sorted(p.name for p in downloads.iterdir())
        assert got == ["feedback.csv", "feedback.json"], got
        dl_rows = list(csv.DictReader(io.StringIO((downloads / "feedback.csv").read_text(encoding="utf-8"))))
        assert [(r["case_id"], r["decision"]) for r in dl_rows] == [(r["case_id"], r["decision"]) for r in rows]
        assert len(json.loads((downloads / "feedback.json").read_text())["feedback"]) == 2

        screenshot("review_report.png")

        errors = _errors(cdp)
        assert not errors, errors
    finally:
        cdp.close()


def test_3d_viewer_slider_keys_and_overlay_in_headless_chromium(chromium, tmp_path):
    """A 3D case reads as a radiologist reads it: three planes, pre-rendered slices, arrow keys, overlay toggle."""
    from medseg.data.synthetic import CT_CLASSES, ct_phantom
    from medseg.review import overlay as ov
    from medseg.review.cases import ReviewCase
    from medseg.review.stack import slice_stack, write_stack

    ph = ct_phantom(2, shape=(48, 48, 16), spacing=(4.0, 4.0, 6.0))
    run_dir = tmp_path / "run"
    planes = [
        str(ov.save_png(ov.overlay_volume(ph.image, ph.label, affine=ph.affine, view=v), run_dir / f"c_{v}.png"))
        for v in ("axial", "coronal", "sagittal")
    ]
    stack = slice_stack(ph.image, ph.label, ph.affine, max_slices=10, class_names=CT_CLASSES)
    write_stack(stack, run_dir / "viewer" / "c.json")
    case = ReviewCase("c", "segmentation", thumbnail=planes[0], planes=planes, stack="viewer/c.json", uncertainty=0.1)
    report = write_report(run_dir, [case], title="viewer test")
    assert report.read_text().count("<script") == 3  # still one self-contained file
    cdp = CDP(chromium, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        ev, load, key, screenshot = _page(cdp, report)
        load()
        ev("document.querySelector('details.viewer').open = true")
        ev("new Promise(r => setTimeout(r, 100))")
        planes_shown = ev("Array.from(document.querySelectorAll('.planes img')).map(i => i.naturalWidth > 0)")
        assert planes_shown == [True, True, True]
        n = ev("document.querySelectorAll('.stack input.pos')[0].max")
        assert int(n) == len(stack["images"]) - 1 == 9
        start = int(ev("document.querySelector('.stack').dataset.index"))
        assert start == stack["start"]
        src0 = ev("document.querySelector('.stack img.base').src")
        assert src0 == stack["images"][start]
        # keyboard: arrows move through the slices (the viewer has focus once opened)
        assert ev("document.activeElement.classList.contains('stack')") is True
        key("ArrowDown")
        assert int(ev("document.querySelector('.stack').dataset.index")) == max(start - 1, 0)
        key("ArrowUp")
        key("ArrowUp")
        assert int(ev("document.querySelector('.stack').dataset.index")) == min(start + 1, 9)
        assert ev("document.querySelector('.stack img.base').src") == stack["images"][min(start + 1, 9)]
        assert ev("document.querySelector('.stack img.ov').src") == stack["overlays"][min(start + 1, 9)]
        # the slider too
        ev(
            "(() => { const s = document.querySelector('.stack input.pos'); s.value = '0';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        assert ev("document.querySelector('.stack img.base').src") == stack["images"][0]
        # overlay toggle ('o' and the button) and opacity
        assert ev("getComputedStyle(document.querySelector('.stack img.ov')).visibility") == "visible"
        ev("document.querySelector('.stack').focus()")
        key("o")
        assert ev("getComputedStyle(document.querySelector('.stack img.ov')).visibility") == "hidden"
        ev("document.querySelector('.stack .ovbtn').click()")
        assert ev("getComputedStyle(document.querySelector('.stack img.ov')).visibility") == "visible"
        ev(
            "(() => { const a = document.querySelector('.stack input.alpha'); a.value = '30';"
            " a.dispatchEvent(new Event('input')); })()"
        )
        assert float(ev("getComputedStyle(document.querySelector('.stack img.ov')).opacity")) == pytest.approx(0.3)
        loaded = ev("Array.from(document.querySelectorAll('.stack img')).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True, True]
        assert ev("document.querySelector('.stack .leg').textContent").startswith("liver")
        screenshot("review_viewer.png")
        errors = _errors(cdp)
        assert not errors, errors
    finally:
        cdp.close()
