"""The report in a real browser: headless Chromium opens the page from the file system with the
network disabled, runs no script of the page's own (it has none), and must decode every figure.

A copy of the page gets a small probe script (the report itself stays script-free) that records
JavaScript and resource errors and each image's natural size as DOM attributes; ``--dump-dom``
prints the DOM after the load event. A deliberately broken image in the copy checks that the
probe does detect a bad image. Chromium's console messages on stderr must contain no error.
Skipped when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report import N_FIGURES, make_report_lake

from pipelines.report import build_report

PROBE = """<script>
(function () {
  var root = document.documentElement;
  function note(msg) {
    root.setAttribute('data-errors', (root.getAttribute('data-errors') || '') + '|' + msg);
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    note(t && t.tagName ? 'resource failed: ' + t.tagName + '#' + (t.id || '') : e.message);
  }, true);
  window.addEventListener('load', function () {
    var imgs = document.images;
    for (var i = 0; i < imgs.length; i++) {
      imgs[i].setAttribute('data-natural', imgs[i].naturalWidth + 'x' + imgs[i].naturalHeight);
      imgs[i].setAttribute('data-complete', String(imgs[i].complete));
    }
    document.body.setAttribute('data-probe', 'done');
  });
})();
</script>"""
BROKEN = '<img id="probe-broken" src="data:image/png;base64,AAAA" alt="probe">'


def find_chromium() -> str | None:
    """Return the Chromium executable: $DRLAKE_CHROMIUM, /usr/bin/chromium or one on PATH."""
    for c in (os.environ.get("DRLAKE_CHROMIUM"), "/usr/bin/chromium"):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_cmd(exe: str, profile: Path, *extra: str) -> list[str]:
    """Return a headless Chromium command line: no sandbox/GPU, no network, a fresh profile."""
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND", *extra]


class _Images(HTMLParser):
    """Collect the attributes of every <img> and of the <html>/<body> elements."""

    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.root: dict = {}
        self.body: dict = {}

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "html":
            self.root = dict(attrs)
        elif tag == "body":
            self.body = dict(attrs)


def console_errors(stderr: str, page: str) -> list[str]:
    """Return Chromium's console lines that report an error or come from the page."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line and (
        "Uncaught" in line or "ERROR:CONSOLE" in line or page in line)]


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    if exe is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH; set "
                    "DRLAKE_CHROMIUM, or install Debian's `chromium` package)")
    return exe


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    lake, _ = make_report_lake(root / "lake")
    return build_report(lake)


def test_page_loads_and_every_figure_decodes(chromium, page, tmp_path):
    html = page.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    head = html.index("</head>")
    body_end = html.rindex("</body>")
    probe.write_text(html[:head] + PROBE + html[head:body_end] + BROKEN + html[body_end:],
                     encoding="utf-8")
    url = probe.resolve().as_uri()
    res = subprocess.run(chromium_cmd(chromium, tmp_path / "profile",
                                      "--virtual-time-budget=20000", "--dump-dom", url),
                         capture_output=True, text=True, encoding="utf-8",
                         errors="replace", timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    dom = _Images()
    dom.feed(res.stdout)
    assert dom.body.get("data-probe") == "done", "the load event never fired"
    assert console_errors(res.stderr, probe.name) == []
    figures = [i for i in dom.images if i.get("id") != "probe-broken"]
    assert len(figures) == N_FIGURES
    for img in figures:
        w, h = map(int, img["data-natural"].split("x"))
        assert w > 100 and h > 100, img.get("alt")
    # the probe does see a broken image, so the checks above would have caught one
    broken = next(i for i in dom.images if i.get("id") == "probe-broken")
    assert broken["data-natural"] == "0x0"
    assert dom.root.get("data-errors") == "|resource failed: IMG#probe-broken"


def test_screenshot_renders(chromium, page, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    res = subprocess.run(chromium_cmd(chromium, tmp_path / "profile", "--hide-scrollbars",
                                      f"--screenshot={shot}", "--window-size=1400,4000",
                                      page.resolve().as_uri()),
                         capture_output=True, text=True, encoding="utf-8",
                         errors="replace", timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_errors(res.stderr, page.name) == []
    with Image.open(shot) as im:
        assert im.size == (1400, 4000)
        gray = im.convert("L")
        # the page drew something: text and figures, not a blank or error page
        dark = sum(gray.histogram()[:128])
        assert dark > 0.005 * 1400 * 4000
