"""The interactive map page: its storage format (Python), and the page itself in a real headless browser.

The browser tests need Chromium (Debian package ``chromium``, or a path in ``DUSTGP_CHROMIUM``) and the Python
package ``playwright`` (its wheel ships the driver; no browser download); they skip without either. Set
``DUSTGP_VIEW_SCREENSHOT=path.png`` to keep the screenshot the test takes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from dustgp.grid import Grid
from dustgp.posterior_map import PosteriorMap
from dustgp.view import (
    MEAN_BITS,
    ViewError,
    decode_cube,
    decode_payload,
    encode_cube,
    render_html,
    view_payload,
    write_view,
)
from known_maps import make_map

GRID = Grid(l=(30, 50, 20), b=(-5, 5, 10), d=(100, 400, 12), ghost_cells=2)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def clump_map(grid: Grid = GRID) -> PosteriorMap:
    """Diffuse dust plus one clump at l = 45, b = 2, d = 250 pc (the left half of the sky image)."""
    l, b, d = grid.cell_centers_lbd()
    rho = 1e-4 + 3e-3 * np.exp(-0.5 * (((l - 45) / 3) ** 2 + ((b - 2) / 2) ** 2 + ((d - 250) / 40) ** 2))
    return make_map(grid, rho)


# ----- storage format ----------------------------------------------------------------------------------------
def test_codes_round_trip_within_half_a_step(rng: np.random.Generator) -> None:
    x = rng.uniform(-4.0, -1.0, (5, 3, 4))
    lo, hi = x.min(axis=(1, 2)), x.max(axis=(1, 2))
    for bits in (8, 16):
        back = decode_cube(encode_cube(x, lo, hi, bits=bits), lo, hi, bits=bits)
        half_step = 0.5 * (hi - lo)[:, None, None] / (2**bits - 2)
        assert np.all(np.abs(back - x) <= half_step * (1 + 1e-9))
        # and the error is not far below the bound: the codes really are bits-bit
        assert np.abs(back - x).max() > 0.2 * half_step.max()
    nan = x.copy()
    nan[0, 0, 0] = np.nan
    assert np.isnan(decode_cube(encode_cube(nan, lo, hi, bits=8), lo, hi, bits=8)[0, 0, 0])


def test_the_page_data_decode_to_the_map_within_the_stated_precision() -> None:
    dmap = clump_map()
    meta, block = view_payload(dmap)
    shown = decode_payload(meta, block)
    specs = {spec["name"]: spec for spec in meta["cubes"]}
    for kind, mean, table in (
        ("density", dmap.density_mean, dmap.density_percentiles),
        ("extinction", dmap.extinction_mean, dmap.extinction_percentiles),
    ):
        spec = specs[f"{kind}_mean"]
        span = (np.asarray(spec["hi"]) - np.asarray(spec["lo"]))[:, None, None]
        # module notes: relative error of a mean at most 10**(range / (2 (2**16 - 2))) - 1
        bound = 10.0 ** (span / (2 * (2**MEAN_BITS - 2))) - 1.0
        assert np.all(np.abs(shown[f"{kind}_mean"] / mean - 1.0) <= bound + 1e-12)
        for name, level in (("lo", 16.0), ("hi", 84.0)):
            spec = specs[f"{kind}_{name}"]
            half_step = 0.5 * (np.asarray(spec["hi"]) - np.asarray(spec["lo"]))[:, None, None] / 254
            truth = table[list(dmap.percentiles).index(level)]
            err = np.abs(np.log10(shown[f"{kind}_{name}"] / truth))
            assert np.all(err <= half_step + np.log10(1 + bound) + 1e-12), f"{kind} {level}"


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    text = render_html(clump_map(), source="map.nc")
    # nothing is fetched: no external URL in any src/href, no fetch or XHR in the script
    for attribute in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text):
        assert attribute.startswith("data:"), attribute
    assert "http://" not in text
    assert "https://" not in text
    assert "XMLHttpRequest" not in text
    assert "fetch(" not in text
    # the data block is what view_payload made
    meta = json.loads(re.search(r'id="dustgp-meta">(.*?)</script>', text, re.S).group(1))
    data = re.search(r'id="dustgp-data">(.*?)</script>', text, re.S).group(1)
    assert meta["shape"] == list(GRID.shape)
    assert len(zlib.decompress(base64.b64decode(data))) == sum(
        GRID.n_cells * spec["bits"] // 8 for spec in meta["cubes"]
    )


def test_maps_the_page_cannot_show_are_named() -> None:
    uneven = Grid(l=[30, 31, 33, 36], b=(-5, 5, 4), d=(100, 400, 5), ghost_cells=0)
    with pytest.raises(ViewError, match="l_edges: expected uniform spacing"):
        view_payload(make_map(uneven, 1e-3))
    dmap = make_map(GRID, 1e-3)
    dmap.percentiles = np.array([2.5, 50.0, 97.5, 99.0, 99.9])  # no 16th percentile and no samples
    with pytest.raises(ViewError, match="percentile 16: expected it among the stored levels"):
        view_payload(dmap)


def test_write_view_never_replaces_unasked(tmp_path: Path) -> None:
    out = write_view(clump_map(), tmp_path / "map.html")
    assert out.stat().st_size > 0
    with pytest.raises(FileExistsError, match="exists"):
        write_view(clump_map(), out)
    write_view(clump_map(), out, overwrite=True)


# ----- the page in a real browser ----------------------------------------------------------------------------
def _chromium() -> str:
    path = os.environ.get("DUSTGP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.skip(f"no Chromium at {path!r} (apt-get install chromium, or set DUSTGP_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with sync_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    messages: list[str] = []
    requests: list[str] = []
    # errors only: the test's own getImageData readbacks draw a Canvas2D performance warning
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_function("window.dustgpView && window.dustgpView.ready", timeout=30_000)
    return page, messages, requests, time.perf_counter() - start


def _canvas_digest(page, selector: str) -> str:
    return page.evaluate(
        """(sel) => { const c = document.querySelector(sel);
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0; return String(h); }""",
        selector,
    )


def test_the_page_in_a_headless_browser(browser, tmp_path: Path) -> None:
    dmap = clump_map()
    html_path = write_view(dmap, tmp_path / "map.html")
    page, messages, requests, load_s = _open(browser, html_path)
    try:
        assert messages == []
        assert requests == [html_path.as_uri()]  # the page itself and nothing else

        # the slider changes the slice: the cell, the caption and the pixels of both images
        start_cell = page.evaluate("window.dustgpView.cell")
        caption = page.locator("#density-caption").text_content()
        before = _canvas_digest(page, "#density-map"), _canvas_digest(page, "#extinction-map")
        page.locator("#distance").focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("window.dustgpView.cell") == start_cell + 2
        assert page.locator("#density-caption").text_content() != caption
        after = _canvas_digest(page, "#density-map"), _canvas_digest(page, "#extinction-map")
        assert after[0] != before[0]
        assert after[1] != before[1]
        # the image shows the slice of that cell: the clump's cell is the brightest at its pixel
        k = int(np.argmin(np.abs(GRID.d_centers - 250)))
        page.evaluate(f"window.dustgpView.setCell({k})")
        assert page.evaluate("window.dustgpView.cell") == k

        # a click fills the sightline panel; longitude increases to the left
        assert page.locator("#sightline").get_attribute("data-filled") == "false"
        box = page.locator("#density-map").bounding_box()
        margin_left, margin_top = 52, 8  # view.js: margin.left, margin.top (CSS px)
        plot_w = box["width"] - margin_left - 96
        plot_h = box["height"] - margin_top - 40
        page.mouse.click(box["x"] + margin_left + 0.12 * plot_w, box["y"] + margin_top + 0.33 * plot_h)
        assert page.locator("#sightline").get_attribute("data-filled") == "true"
        il, ib = page.evaluate("window.dustgpView.pixel")
        assert il == GRID.n_l - 1 - int(0.12 * GRID.n_l)  # 12% from the left edge: near the largest l
        assert ib == GRID.n_b - 1 - int(0.33 * GRID.n_b)
        assert float(page.locator("#sightline").get_attribute("data-l")) == pytest.approx(GRID.l_centers[il])
        line = page.evaluate("window.dustgpView.sightline")
        meta, block = view_payload(dmap)
        shown = decode_payload(meta, block)
        # the page's values are the decoded codes (float32 in the browser)
        for kind in ("density", "extinction"):
            for part in ("mean", "lo", "hi"):
                got = np.asarray(line[kind][part], dtype=float)
                want = shown[f"{kind}_{part}"][:, ib, il]
                if kind == "extinction":  # the page prepends the zero at the first edge
                    assert got[0] == 0.0
                    got = got[1:]
                np.testing.assert_allclose(got, want, rtol=2e-7 * 4)  # float32 arithmetic, a few roundings
        assert "A to" in page.locator("#sightline-label").text_content()
        shot = Path(os.environ.get("DUSTGP_VIEW_SCREENSHOT") or tmp_path / "view.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert messages == []
    finally:
        page.close()
    assert load_s < 30
