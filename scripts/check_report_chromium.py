#!/usr/bin/env python3
"""Check a spinenav HTML report in headless Chromium: it renders, and every image loads.

Usage::

    python scripts/check_report_chromium.py REPORT.html [--screenshot OUT.png] [--json]
                                            [--chromium /usr/bin/chromium]

Two Chromium runs, each with a fresh profile folder and no network:

1. ``--dump-dom`` on a copy of the report with a tiny script added at the end of the body:
   on the window's ``load`` event it writes into the DOM, as JSON, how many ``<img>`` there
   are, how many decoded (``complete`` and ``naturalWidth > 0``), the alt text of any that did
   not, the ids of the sections and the page title. The report itself has no script; only the
   copy does.
2. ``--screenshot`` of the report itself (``--window-size`` 1200 x 4000 by default), checked
   to be a PNG that is not blank.

Prints one line per check and exits 0 when all pass, 1 when one fails, 2 when Chromium is
missing or does not run. With ``--json`` the last line of stdout is a JSON object with the
figures (``ok``, ``images``, ``images_loaded``, ``broken``, ``sections``, ``screenshot``,
``seconds``).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
)

PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var good = function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; };
  var out = {
    images: imgs.length,
    images_loaded: imgs.filter(good).length,
    broken: imgs.filter(function (i) { return !good(i); }).map(function (i) { return i.alt || i.src.slice(0, 40); }),
    sizes: imgs.map(function (i) { return [i.naturalWidth, i.naturalHeight]; }),
    sections: Array.prototype.slice.call(document.querySelectorAll("section[id], header[id]"))
                .map(function (s) { return s.id; }),
    title: document.title
  };
  var pre = document.createElement("pre");
  pre.id = "spinenav-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def _run_chromium(chromium: str, args: list[str], *, timeout_s: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="spinenav-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def _png_size_and_spread(path: Path) -> tuple[int, int, float]:
    """Width, height and the spread of pixel values (max - min of the per-row standard
    deviation, 0-255 scale) of a PNG; spread is -1 when matplotlib is not importable (the size
    comes from the PNG header either way)."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    try:
        from matplotlib.image import imread
    except ImportError:
        return width, height, -1.0
    img = imread(str(path))[..., :3] * 255.0
    return width, height, float(img.max() - img.min())


def check_report(report: Path, *, chromium: str, screenshot: Path | None = None,
                 window: tuple[int, int] = (1200, 4000), timeout_s: float = 90.0) -> dict:
    """Run both checks; returns the figures (see the module docstring)."""
    t0 = time.perf_counter()
    result: dict = {"report": str(report), "ok": False, "errors": []}
    text = report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="spinenav-report-check-") as tmp:
        probe_page = Path(tmp) / "probe.html"
        probe_page.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
        proc = _run_chromium(chromium, ["--virtual-time-budget=10000", "--dump-dom", probe_page.as_uri()],
                             timeout_s=timeout_s)
        m = re.search(r'<pre id="spinenav-check">(.*?)</pre>', proc.stdout, re.S)
        if proc.returncode != 0 or not m:
            result["errors"].append(f"--dump-dom gave no probe result (exit {proc.returncode}): "
                                    f"{proc.stderr.strip()[-800:]}")
        else:
            probe = json.loads(html.unescape(m.group(1)))
            result.update(probe)
            if probe["images"] == 0:
                result["errors"].append("the page has no image")
            if probe["images_loaded"] != probe["images"]:
                result["errors"].append(f"{probe['images'] - probe['images_loaded']} image(s) did not load: "
                                        f"{probe['broken']}")
        shot = screenshot or Path(tmp) / "shot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        proc = _run_chromium(chromium, [f"--screenshot={shot}", f"--window-size={window[0]},{window[1]}",
                                        "--virtual-time-budget=10000", report.resolve().as_uri()],
                             timeout_s=timeout_s)
        if proc.returncode != 0 or not shot.exists():
            result["errors"].append(f"--screenshot failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        else:
            w, h, spread = _png_size_and_spread(shot)
            result["screenshot"] = {"path": str(shot) if screenshot else None, "width": w, "height": h,
                                    "spread": spread}
            if (w, h) != window:
                result["errors"].append(f"screenshot is {w} x {h}, expected {window[0]} x {window[1]}")
            if 0 <= spread < 40:
                result["errors"].append(f"screenshot looks blank (pixel values span {spread:.0f} of 255)")
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["ok"] = not result["errors"]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--window-size", default="1200,4000", help="width,height in pixels")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"chromium not found at {args.chromium}: install it (Debian: apt-get install chromium)",
              file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"{args.report}: no such file", file=sys.stderr)
        return 2
    w, h = (int(x) for x in args.window_size.split(","))
    try:
        res = check_report(args.report, chromium=args.chromium, screenshot=args.screenshot, window=(w, h))
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"chromium did not run: {exc}", file=sys.stderr)
        return 2
    print(f"images loaded: {res.get('images_loaded', 0)} of {res.get('images', 0)}")
    print(f"sections: {', '.join(res.get('sections', []))}")
    if "screenshot" in res:
        s = res["screenshot"]
        print(f"screenshot: {s['width']} x {s['height']}, pixel spread {s['spread']:.0f}"
              + (f", written to {s['path']}" if s["path"] else ""))
    for e in res["errors"]:
        print(f"FAIL: {e}")
    print(("OK" if res["ok"] else "FAILED") + f" in {res['seconds']:.1f} s")
    if args.json:
        print(json.dumps(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
