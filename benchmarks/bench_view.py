"""Size and load time of the interactive map page (``dustgp view``) in headless Chromium.

Builds the page of a map (default ``demo-output/map.nc``, the demo's 100 x 100 x 105 + 2 ghost cells; or, with
``--synthetic``, the synthetic map of ``bench_query.py`` at the same size: density uncorrelated from cell to cell,
bands at fixed fractions of the mean), then opens it from disk in headless Chromium through Playwright: time to
the page's ``ready`` flag (decoding the data included), the time its script spent decoding and drawing, and the
time one slider step takes to redraw. Clicks a pixel, and saves a screenshot next to the JSON.

Usage::

    python benchmarks/bench_view.py [--map demo-output/map.nc | --synthetic] [--chromium /usr/bin/chromium]

Writes ``benchmarks/results/view.json`` and ``benchmarks/results/view.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

import dustgp
from bench_query import make_map
from dustgp.io import read_map
from dustgp.posterior_map import DEFAULT_KEEP_SAMPLES
from dustgp.view import render_html

RESULTS = Path(__file__).resolve().parent / "results"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", default="demo-output/map.nc", help="map file (default demo-output/map.nc)")
    parser.add_argument("--synthetic", action="store_true", help="bench_query.py's synthetic map instead")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--repeats", type=int, default=3, help="page loads (the best is reported)")
    args = parser.parse_args()

    if args.synthetic:
        dmap, source = make_map(DEFAULT_KEEP_SAMPLES), "bench_query.make_map"
    else:
        dmap, source = read_map(args.map), args.map
    start = time.perf_counter()
    text = render_html(dmap, source=Path(source).name)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "map.html"
        page_path.write_text(text, encoding="utf-8")
        size = page_path.stat().st_size
        loads, timings, errors = [], [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            for _ in range(args.repeats):
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                start = time.perf_counter()
                page.goto(page_path.as_uri())
                page.wait_for_function("window.dustgpView && window.dustgpView.ready", timeout=120_000)
                loads.append(time.perf_counter() - start)
                timings.append(page.evaluate("window.dustgpView.timing"))
                step_ms = page.evaluate(
                    """() => { const v = window.dustgpView, t0 = performance.now();
                               v.setCell(v.cell + 1); return performance.now() - t0; }"""
                )
                timings[-1]["slider_step_ms"] = step_ms
                page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(page_path.as_uri())
            page.wait_for_function("window.dustgpView && window.dustgpView.ready", timeout=120_000)
            box = page.locator("#density-map").bounding_box()
            page.mouse.click(box["x"] + 52 + 0.3 * (box["width"] - 148), box["y"] + 8 + 0.6 * (box["height"] - 48))
            RESULTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(RESULTS / "view.png"), full_page=True)
            version = browser.version
            browser.close()
    best = min(range(len(loads)), key=loads.__getitem__)
    report = {
        "benchmark": "view",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "map": {"source": source, "grid": repr(dmap.grid), "cells": dmap.grid.n_cells},
        "page_bytes": size,
        "page_mb": size / 1e6,
        "bytes_per_cell": size / dmap.grid.n_cells,
        "build_s": build_s,
        "load_to_ready_s": loads[best],
        "load_to_ready_all_s": loads,
        "in_page_ms": timings[best],
        "console_errors": errors,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "chromium": version,
            "python": platform.python_version(),
            "dustgp": dustgp.__version__,
        },
    }
    (RESULTS / "view.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{source}: page {size / 1e6:.2f} MB ({size / dmap.grid.n_cells:.2f} bytes per cell), built in "
        f"{build_s:.1f} s; "
        f"ready in {loads[best]:.2f} s (best of {len(loads)}; decode {timings[best]['decode_ms']:.0f} ms, draw "
        f"{timings[best]['render_ms']:.0f} ms, slider step {timings[best]['slider_step_ms']:.0f} ms); "
        f"console errors: {len(errors)}; wrote {RESULTS / 'view.json'} and view.png"
    )


if __name__ == "__main__":
    main()
