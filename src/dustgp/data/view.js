// dustgp map page: decodes the cubes written by dustgp.view and draws them on canvases. No network, no library.
"use strict";
(function () {
  const meta = JSON.parse(document.getElementById("dustgp-meta").textContent);
  const [nD, nB, nL] = meta.shape;
  const nCol = nB * nL;
  const lEdges = meta.l_edges, bEdges = meta.b_edges, dEdges = meta.d_edges;
  const ghost = meta.ghost_cells;
  const dl = (lEdges[nL] - lEdges[0]) / nL, db = (bEdges[nB] - bEdges[0]) / nB;
  const status = document.getElementById("status");
  const slider = document.getElementById("distance");
  const api = { ready: false, cell: null, pixel: null, sightline: null, meta: meta };
  window.dustgpView = api;

  const fmtL = (l) => (((l % 360) + 360) % 360).toFixed(2);
  const fmt = (x, n) => (Number.isFinite(x) ? Number(x).toPrecision(n || 3) : "n/a");

  // ----- decoding: base64 -> inflate -> undo the distance differences -> values through a lookup table -----
  async function decode() {
    const t0 = performance.now();
    const text = document.getElementById("dustgp-data").textContent.trim();
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const t1 = performance.now();
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    const raw = new Uint8Array(await new Response(stream).arrayBuffer());
    const t2 = performance.now();
    const n = nD * nCol;
    const total = meta.cubes.reduce((sum, spec) => sum + (n * spec.bits) / 8, 0);
    if (raw.length !== total) throw new Error(`map data: expected ${total} bytes, got ${raw.length}`);
    const cubes = {};
    let offset = 0;
    for (const spec of meta.cubes) {
      const wide = spec.bits === 16, top = 2 ** spec.bits - 2, mask = 2 ** spec.bits - 1;
      const part = raw.subarray(offset, offset + (n * spec.bits) / 8);
      offset += (n * spec.bits) / 8;
      const base = spec.relative_to ? cubes[spec.relative_to] : null;
      const values = new Float32Array(n);
      const running = new Uint32Array(nCol);  // the code of each column so far, when codes are differenced along d
      // code c stands for 10^(lo + (c - 1) step); as a product of two 256-entry tables (c - 1 = 256 h + l)
      const outer = new Float64Array(256), inner = new Float64Array(256);
      for (let k = 0; k < nD; k++) {
        const lo = spec.lo[k], step = (spec.hi[k] > lo ? spec.hi[k] - lo : 1) / top;
        for (let j = 0; j < 256; j++) { outer[j] = Math.pow(10, lo + 256 * j * step); inner[j] = Math.pow(10, j * step); }
        const first = k * nCol;
        for (let col = 0; col < nCol; col++) {
          const i = first + col;
          const delta = wide ? part[i] | (part[n + i] << 8) : part[i];  // 16-bit: low bytes, then high bytes
          const c = spec.delta ? (running[col] + delta) & mask : delta;
          running[col] = c;
          const x = c === 0 ? NaN : outer[(c - 1) >> 8] * inner[(c - 1) & 255];
          values[i] = base ? base[i] * x : x;
        }
      }
      cubes[spec.name] = values;
    }
    api.timing = { decode_ms: performance.now() - t0, base64_ms: t1 - t0, inflate_ms: t2 - t1 };
    return cubes;
  }

  function parseLut(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
    return out;
  }

  // ----- axes helpers ------------------------------------------------------------------------------------
  function niceTicks(lo, hi, count) {
    const span = Math.abs(hi - lo);
    if (!(span > 0)) return [lo];
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const a = Math.min(lo, hi), b = Math.max(lo, hi), ticks = [];
    for (let t = Math.ceil(a / step) * step; t <= b + 1e-9 * span; t += step) ticks.push(Math.round(t / step) * step);
    return ticks;
  }

  function setupCanvas(canvas, w, h) {
    const r = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * r);
    canvas.height = Math.round(h * r);
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(r, 0, 0, r, 0, 0);
    return ctx;
  }

  // ----- the two maps ------------------------------------------------------------------------------------
  const margin = { left: 52, right: 96, top: 8, bottom: 40 };
  const scale = Math.min(400 / (nL * dl), 340 / (nB * db));  // px per degree, square degrees
  const plotW = Math.max(120, Math.round(nL * dl * scale)), plotH = Math.max(80, Math.round(nB * db * scale));

  function pixelAt(ev, canvas) {
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left - margin.left, y = ev.clientY - rect.top - margin.top;
    if (x < 0 || y < 0 || x >= plotW || y >= plotH) return null;
    // longitude increases to the left: x = 0 is the largest l; y = 0 is the largest b
    const il = nL - 1 - Math.floor((x / plotW) * nL), ib = nB - 1 - Math.floor((y / plotH) * nB);
    return [Math.min(Math.max(il, 0), nL - 1), Math.min(Math.max(ib, 0), nB - 1)];
  }

  function drawMap(canvas, values, offset, colour, logScale, label, unit) {
    const ctx = setupCanvas(canvas, margin.left + plotW + margin.right, margin.top + plotH + margin.bottom);
    const lut = colour.rgb;
    const [vlo, vhi] = logScale ? colour.log10_limits : colour.limits;
    const img = new ImageData(nL, nB);
    for (let ib = 0; ib < nB; ib++) {
      for (let il = 0; il < nL; il++) {
        const v = values[offset + ib * nL + il];
        const p = 4 * ((nB - 1 - ib) * nL + (nL - 1 - il));
        if (!Number.isFinite(v)) { img.data[p + 3] = 0; continue; }
        const x = logScale ? Math.log10(Math.max(v, 1e-300)) : v;
        const k = Math.min(255, Math.max(0, Math.round(((x - vlo) / (vhi - vlo || 1)) * 255)));
        img.data[p] = lut[3 * k]; img.data[p + 1] = lut[3 * k + 1]; img.data[p + 2] = lut[3 * k + 2]; img.data[p + 3] = 255;
      }
    }
    const off = document.createElement("canvas");
    off.width = nL; off.height = nB;
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#eee";
    ctx.fillRect(margin.left, margin.top, plotW, plotH);
    ctx.drawImage(off, margin.left, margin.top, plotW, plotH);
    ctx.strokeStyle = "#444";
    ctx.strokeRect(margin.left + 0.5, margin.top + 0.5, plotW - 1, plotH - 1);
    // axes: l decreasing to the right
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const t of niceTicks(lEdges[0], lEdges[nL], 5)) {
      const x = margin.left + ((lEdges[nL] - t) / (lEdges[nL] - lEdges[0])) * plotW;
      ctx.fillRect(x, margin.top + plotH, 1, 4);
      ctx.fillText(fmtL(t).replace(/\.?0+$/, ""), x, margin.top + plotH + 6);
    }
    ctx.fillText("Galactic longitude l (deg)", margin.left + plotW / 2, margin.top + plotH + 22);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const t of niceTicks(bEdges[0], bEdges[nB], 5)) {
      const y = margin.top + ((bEdges[nB] - t) / (bEdges[nB] - bEdges[0])) * plotH;
      ctx.fillRect(margin.left - 4, y, 4, 1);
      ctx.fillText(String(t), margin.left - 6, y);
    }
    ctx.save();
    ctx.translate(12, margin.top + plotH / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText("b (deg)", 0, 0);
    ctx.restore();
    // colour bar
    const cx = margin.left + plotW + 12, cw = 12;
    for (let k = 0; k < 256; k++) {
      ctx.fillStyle = `rgb(${lut[3 * k]},${lut[3 * k + 1]},${lut[3 * k + 2]})`;
      const y0 = margin.top + plotH * (1 - (k + 1) / 256);
      ctx.fillRect(cx, y0, cw, plotH / 256 + 0.5);
    }
    ctx.strokeRect(cx + 0.5, margin.top + 0.5, cw, plotH - 1);
    ctx.fillStyle = "#222"; ctx.textAlign = "left";
    for (const t of niceTicks(vlo, vhi, 4)) {
      const y = margin.top + plotH * (1 - (t - vlo) / (vhi - vlo || 1));
      ctx.fillText(logScale ? `1e${fmt(t, 2)}` : fmt(t, 2), cx + cw + 3, y);
    }
    ctx.save();
    ctx.translate(cx + cw + 54, margin.top + plotH / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
    ctx.fillText(`${label} (${unit})`, 0, 0);
    ctx.restore();
    // selected pixel
    if (api.pixel) {
      const [il, ib] = api.pixel;
      const x = margin.left + ((nL - 1 - il + 0.5) / nL) * plotW, y = margin.top + ((nB - 1 - ib + 0.5) / nB) * plotH;
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.arc(x, y, 7.5, 0, 2 * Math.PI); ctx.stroke();
    }
  }

  // ----- the sightline panel -----------------------------------------------------------------------------
  function drawLinePlot(canvas, opts) {
    const W = 520, H = 260, m = { left: 64, right: 12, top: 22, bottom: 40 };
    const ctx = setupCanvas(canvas, W, H);
    const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
    const xMax = dEdges[nD];
    const finite = opts.lo.concat(opts.hi, opts.mean).filter((v) => Number.isFinite(v) && (!opts.log || v > 0));
    let yLo = Math.min(...finite), yHi = Math.max(...finite);
    if (opts.log) { yLo = Math.log10(yLo); yHi = Math.log10(yHi); }
    if (!(yHi > yLo)) { yHi = yLo + 1; }
    const pad = 0.05 * (yHi - yLo); yLo = opts.log ? yLo - pad : Math.min(0, yLo); yHi += pad;
    const X = (d) => m.left + (d / xMax) * pw;
    const Y = (v) => m.top + ph * (1 - ((opts.log ? Math.log10(Math.max(v, 1e-300)) : v) - yLo) / (yHi - yLo));
    ctx.fillStyle = "#f0f0f0";
    if (ghost > 0) ctx.fillRect(X(0), m.top, X(dEdges[ghost]) - X(0), ph);
    // band
    ctx.fillStyle = opts.fill;
    ctx.beginPath();
    opts.x.forEach((d, i) => (i ? ctx.lineTo(X(d), Y(opts.hi[i])) : ctx.moveTo(X(d), Y(opts.hi[i]))));
    for (let i = opts.x.length - 1; i >= 0; i--) ctx.lineTo(X(opts.x[i]), Y(opts.lo[i]));
    ctx.closePath(); ctx.fill();
    ctx.strokeStyle = opts.stroke; ctx.lineWidth = 1.5;
    ctx.beginPath();
    opts.x.forEach((d, i) => (i ? ctx.lineTo(X(d), Y(opts.mean[i])) : ctx.moveTo(X(d), Y(opts.mean[i]))));
    ctx.stroke();
    // chosen distance
    ctx.strokeStyle = "#c00"; ctx.setLineDash([4, 3]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(X(opts.marker), m.top); ctx.lineTo(X(opts.marker), m.top + ph); ctx.stroke();
    ctx.setLineDash([]);
    ctx.strokeStyle = "#444"; ctx.strokeRect(m.left + 0.5, m.top + 0.5, pw - 1, ph - 1);
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const t of niceTicks(0, xMax, 6)) { ctx.fillRect(X(t), m.top + ph, 1, 4); ctx.fillText(String(t), X(t), m.top + ph + 6); }
    ctx.fillText("distance (pc)", m.left + pw / 2, m.top + ph + 22);
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const t of niceTicks(yLo, yHi, 4)) {
      const y = m.top + ph * (1 - (t - yLo) / (yHi - yLo));
      ctx.fillRect(m.left - 4, y, 4, 1);
      ctx.fillText(opts.log ? `1e${fmt(t, 2)}` : fmt(t, 2), m.left - 6, y);
    }
    ctx.textAlign = "left"; ctx.textBaseline = "top";
    ctx.fillText(opts.title, m.left, 4);
    ctx.fillStyle = opts.stroke; ctx.textAlign = "right";
    ctx.fillText(`mean, ${meta.band[0]}–${meta.band[1]}% band` + (ghost ? "; grey: foreground cells" : ""), W - m.right, 4);
  }

  function column(cube, il, ib) {
    const out = new Array(nD);
    for (let k = 0; k < nD; k++) out[k] = cube[k * nCol + ib * nL + il];
    return out;
  }

  function drawSightline(cubes) {
    if (!api.pixel) return;
    const [il, ib] = api.pixel;
    const k = api.cell;
    // density: uniform in each cell, drawn as steps over the cell edges
    const stepX = [], step = (arr) => { const o = []; arr.forEach((v) => o.push(v, v)); return o; };
    for (let j = 0; j < nD; j++) stepX.push(dEdges[j], dEdges[j + 1]);
    const rho = { mean: column(cubes.density_mean, il, ib), lo: column(cubes.density_lo, il, ib), hi: column(cubes.density_hi, il, ib) };
    // extinction: at the cell edges, 0 at the first edge, linear in between (as dustgp.query interpolates)
    const ext = ["extinction_mean", "extinction_lo", "extinction_hi"].map((n) => [0].concat(column(cubes[n], il, ib)));
    drawLinePlot(document.getElementById("sightline-density"), {
      x: stepX, mean: step(rho.mean), lo: step(rho.lo), hi: step(rho.hi), log: true,
      marker: 0.5 * (dEdges[k] + dEdges[k + 1]), fill: "rgba(49,104,142,0.3)", stroke: "#31688e",
      title: "density (mag/pc)",
    });
    drawLinePlot(document.getElementById("sightline-extinction"), {
      x: dEdges, mean: ext[0], lo: ext[1], hi: ext[2], log: false, marker: dEdges[k + 1],
      fill: "rgba(183,55,121,0.3)", stroke: "#b73779", title: "extinction A (mag)",
    });
    const l = 0.5 * (lEdges[il] + lEdges[il + 1]), b = 0.5 * (bEdges[ib] + bEdges[ib + 1]);
    document.getElementById("sightline-label").textContent =
      `l = ${fmtL(l)}°, b = ${b.toFixed(2)}° (pixel ${il}, ${ib}): A to ${dEdges[k + 1].toFixed(0)} pc = ` +
      `${fmt(ext[0][k + 1])} mag [${fmt(ext[1][k + 1])}, ${fmt(ext[2][k + 1])}]; to ${dEdges[nD].toFixed(0)} pc = ` +
      `${fmt(ext[0][nD])} mag [${fmt(ext[1][nD])}, ${fmt(ext[2][nD])}]`;
    const section = document.getElementById("sightline");
    section.dataset.filled = "true";
    section.dataset.l = l.toFixed(6);
    section.dataset.b = b.toFixed(6);
    api.sightline = { l: l, b: b, d_edges: dEdges, density: rho, extinction: { mean: ext[0], lo: ext[1], hi: ext[2] } };
  }

  // ----- wiring ------------------------------------------------------------------------------------------
  function render(cubes) {
    const k = api.cell;
    const far = dEdges[k + 1];
    const isGhost = k < ghost;
    document.getElementById("distance-label").textContent =
      `cell ${k + 1}/${nD}: ${dEdges[k].toFixed(0)}–${far.toFixed(0)} pc` + (isGhost ? " (foreground cell)" : "");
    document.getElementById("density-caption").textContent = `Density, ${dEdges[k].toFixed(0)}–${far.toFixed(0)} pc (mag/pc)`;
    document.getElementById("extinction-caption").textContent = `Extinction A from the Sun to ${far.toFixed(0)} pc (mag)`;
    drawMap(document.getElementById("density-map"), cubes.density_mean, k * nCol, meta.colour.density, true, "density", "mag/pc");
    drawMap(document.getElementById("extinction-map"), cubes.extinction_mean, k * nCol, meta.colour.extinction, false, "A", "mag");
    drawSightline(cubes);
  }

  function start(cubes) {
    meta.colour.density.rgb = parseLut(meta.colour.density.lut);
    meta.colour.extinction.rgb = parseLut(meta.colour.extinction.lut);
    slider.max = String(nD - 1);
    api.cell = Math.min(nD - 1, ghost + Math.floor((nD - ghost) / 2));
    slider.value = String(api.cell);
    slider.addEventListener("input", () => { api.cell = Number(slider.value); render(cubes); });
    for (const id of ["density-map", "extinction-map"]) {
      const canvas = document.getElementById(id);
      canvas.addEventListener("click", (ev) => {
        const p = pixelAt(ev, canvas);
        if (p) { api.pixel = p; render(cubes); }
      });
      canvas.addEventListener("mousemove", (ev) => {
        const p = pixelAt(ev, canvas);
        const out = document.getElementById("readout");
        if (!p) { out.textContent = ""; return; }
        const [il, ib] = p, i = api.cell * nCol + ib * nL + il;
        const l = 0.5 * (lEdges[il] + lEdges[il + 1]), b = 0.5 * (bEdges[ib] + bEdges[ib + 1]);
        out.textContent = `l = ${fmtL(l)}°, b = ${b.toFixed(2)}°: density ${fmt(cubes.density_mean[i])} mag/pc, ` +
          `A to ${dEdges[api.cell + 1].toFixed(0)} pc ${fmt(cubes.extinction_mean[i])} mag`;
      });
    }
    api.setCell = (k) => { slider.value = String(k); api.cell = Number(slider.value); render(cubes); };
    api.select = (il, ib) => { api.pixel = [il, ib]; render(cubes); };
    api.value = (name, k, ib, il) => cubes[name][k * nCol + ib * nL + il];
    const prov = meta.provenance;
    document.getElementById("subtitle").textContent = `${meta.grid}` + (meta.source ? ` — ${meta.source}` : "");
    document.getElementById("footer").textContent =
      `Map made with dustgp ${prov.dustgp_version} (page by dustgp ${prov.page_dustgp_version}; method: ${prov.reference}). ` +
      "Means stored as 16-bit codes of their logarithm, band edges as 8-bit codes relative to the mean (see dustgp.view). " +
      `Extinction is integrated to each cell's far edge; bands are the posterior ${meta.band[0]}th and ${meta.band[1]}th percentiles.`;
    const t0 = performance.now();
    render(cubes);
    api.timing.render_ms = performance.now() - t0;
    status.textContent = "";
    api.ready = true;
    document.body.dataset.ready = "true";
  }

  if (typeof DecompressionStream === "undefined") {
    status.textContent = "This browser cannot inflate the map data (it lacks DecompressionStream); use a browser from 2023 or later.";
    return;
  }
  decode().then(start, (err) => {
    status.textContent = "Could not read the map data: " + err.message;
    console.error(err);
  });
})();
