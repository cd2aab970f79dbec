"""How far is the fit's posterior from the exact one? Hamiltonian Monte Carlo against q(v) on a small prior sky.

``bench_calibration.py`` scores the bands against the truth, which mixes the inference's error with the luck of one
sky. Here the exact posterior of the *same model* is the reference: phi on the training cells with the RBF prior at
the true hyperparameters, and the fit's own likelihood (its distance nodes, mixture and outlier fraction where the fit
ended), sampled by Hamiltonian Monte Carlo. The sky is ``bench_calibration.py``'s prior sky (the background times 10
to the power of a Gaussian process with the model's kernel, 30 / 30 / 25 pc, 0.1 dex²) on a patch small enough
for exact sampling: l = 60-70°, b = ±3°, d = 180-500 pc, the Section 3 training resolution (5 × 6 × 35 cells + 2
ghost cells, 1110 in all) and star density (4500 stars). Catalogues:

* ``clean``: true distances, sigma_A = sqrt(0.05² + (0.05 A)²), Gaussian likelihood (the twin's);
* ``realistic``: ``bench_likelihood.py``'s errors (5-20% distance errors, 3% outliers of +0.3-1.5 mag), the
  default likelihood on ``Catalog.with_volume_prior()``;
* ``distance-errors``, ``outliers``: one of the two at a time, to tell which one the exact posterior pays for;
* ``mock-twin``, ``mock``: issue 10's realistic mock (``bench_likelihood.py --background 0.0016 --size 2``) on a patch
  of the same shape holding its dense core (l = 73-83°, b = 0-6°), its twin and its realistic catalogue, each held
  at the hyperparameters that ``bench_likelihood.py``'s whole-sky case (``twin``, ``volume-prior``) learned: where
  the prior is not right, is it the inference or the model that misses?

Each is fitted with ``method="newton"``, M = 1000, the hyperparameters held (at the truth on the prior sky), and
predicted on the training grid with 400 joint samples. The sampler works in the whitened cell values ``w`` (phi = c +
L_K w), preconditioned by the Hessian at the posterior's mode (so that it sees a near-unit Gaussian), with the step size
tuned to ~80% acceptance in warm-up, a diagonal mass matrix from the warm-up's draws, and 24 leapfrog steps per draw.
Rows give, for q, for the exact posterior and for ``laplace`` (q's mean with the covariance of the mode's Hessian), the
share of cells whose true density and extinction lie inside the 16-84% band and the spread of z = (truth - mean) / sd;
and q's posterior sd over the exact one (10th / 50th / 90th percentile over cells, and by distance), q's mean offset in
exact sds, and the chain's acceptance and effective sample size (the least and the 5th percentile over the region's
cells; the ghost cells' and the log posterior's).

    .venv/bin/python benchmarks/bench_exact.py --seeds 1 2 3 --cases clean realistic \\
        --out benchmarks/results/exact-m1000.json
    .venv/bin/python benchmarks/bench_exact.py --seeds 1 2 3 --cases distance-errors outliers \\
        --out benchmarks/results/exact-split-m1000.json
    .venv/bin/python benchmarks/bench_exact.py --seeds 1 2 3 --cases mock-twin mock \\
        --out benchmarks/results/exact-mock-m1000.json

Each (seed, case) takes 3.5-5.5 minutes on 2 cores; a mock case's first run also fits the whole sky once (its fit
is cached where ``bench_likelihood.py`` caches it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench_likelihood
import dustgp
from bench_calibration import BACKGROUND, FIELD, MOCK
from bench_fit import write_json
from bench_likelihood import REALISTIC
from bench_scaling import machine, versions
from dustgp.grid import Grid
from dustgp.projection import rbf_cross_covariance
from dustgp.simulate import simulate

HERE = Path(__file__).resolve().parent
L, B, D = (60.0, 70.0), (-3.0, 3.0), (180.0, 500.0)
TRUTH = Grid(l=(*L, 25), b=(*B, 15), d=(*D, 115), ghost_cells=0)
TRAIN = Grid(l=(*L, 5), b=(*B, 6), d=(*D, 35), ghost_cells=2)
#: the benchmark sky's density of stars (60,000 over 40° × 20°)
N_STARS = round(60_000 * (L[1] - L[0]) * (B[1] - B[0]) / 800.0)
CATALOGUES: dict[str, dict[str, Any]] = {
    "clean": {},
    "realistic": REALISTIC,
    "distance-errors": {"distance_errors": REALISTIC["distance_errors"]},
    "outliers": {k: REALISTIC[k] for k in ("outlier_fraction", "outlier_amplitude")},
}
#: the realistic mock of issue 10 as ``bench_likelihood.py --background 0.0016 --size 2`` makes it
#: (``results/likelihood-resolved-edges-m1000.json``), on a patch holding its dense core (l = 78°, b = 4.4°, 276 pc)
MOCK_SKY = {"background": 1.6e-3, "size": 2.0}
#: the distances and shape of TRAIN (the scores read those from TRAIN) on another patch of sky
MOCK_TRAIN = Grid(l=(73.0, 83.0, 5), b=(0.0, 6.0, 6), d=(*D, 35), ghost_cells=2)
#: patch cases of that mock, each held at the hyperparameters that ``bench_likelihood.py``'s whole-sky case learned
MOCK_CASES = {"mock-twin": "twin", "mock": "volume-prior"}
SAMPLES = 400
LEAPFROG = 24
#: warm-up stages: step size; step size and the mass matrix's diagonal; step size again
WARMUP, DRAWS, THIN = (150, 250, 100), 1200, 3
DISTANCE_BINS = ((180, 260), (260, 340), (340, 420), (420, 500))
#: the region's cells in the flat grid order (the ghost cells come first), on TRAIN and MOCK_TRAIN alike
REGION = slice(TRAIN.ghost_cells * TRAIN.n_columns, None)


def prior_sky(seed: int, case: str) -> tuple[Any, Any, Grid, dict[str, Any]]:
    """The prior sky's patch: its sky, catalogue, grid and fit options (the truth's hyperparameters, held)."""
    sky = simulate(TRUTH, seed=seed, **(MOCK | {"n_stars": N_STARS}), **FIELD, **CATALOGUES[case])
    catalog = sky.catalog.with_volume_prior() if "distance_errors" in CATALOGUES[case] else sky.catalog
    options: dict[str, Any] = {
        "length_scale": list(FIELD["field_length_scale"]),
        "scale": FIELD["field_scale"],
        "mean": math.log10(BACKGROUND),
    }
    if case == "clean":
        options |= {"likelihood": "gaussian", "error_floor": 0.0}
    return sky, catalog, TRAIN, options


def mock_patch(seed: int, case: str, inducing_points: int) -> tuple[Any, Any, Grid, dict[str, Any]]:
    """The realistic mock's patch: its stars on :data:`MOCK_TRAIN`, with the fit options of ``bench_likelihood.py``'s
    whole-sky case and the hyperparameters that case learned (fitted once and cached as that benchmark caches it)."""
    name = MOCK_CASES[case]
    realistic, case_options = bench_likelihood.CASES[name]
    sky = bench_likelihood.mock(seed, realistic, MOCK_SKY["background"], MOCK_SKY["size"])
    catalog = sky.catalog.with_volume_prior() if name in bench_likelihood.VOLUME_PRIOR else sky.catalog
    checkpoint = bench_likelihood.checkpoint_for(name, seed, inducing_points, MOCK_SKY["background"], MOCK_SKY["size"])
    checkpoint.parent.mkdir(exist_ok=True)
    where = {"resume": checkpoint} if checkpoint.exists() else {"checkpoint": checkpoint}
    options = {**bench_likelihood.FIT, "inducing_points": inducing_points, **case_options}
    whole = dustgp.fit(catalog, bench_likelihood.TRAIN, progress=False, seed=seed, **where, **options)
    h = whole.hyperparameters()
    (l_lo, *_, l_hi), (b_lo, *_, b_hi) = MOCK_TRAIN.l_edges, MOCK_TRAIN.b_edges
    inside = (catalog.l >= l_lo) & (catalog.l < l_hi) & (catalog.b >= b_lo) & (catalog.b < b_hi)
    held = {
        "length_scale": list(h["length_scale_pc"]),
        "scale": h["scale_dex2"],
        "mean": h["mean_log10_density"],
        **case_options,
    }
    return sky, catalog.select(inside), MOCK_TRAIN, held


def fit_and_map(seed: int, case: str, inducing_points: int, extra: dict[str, Any]) -> tuple[Any, Any, np.ndarray]:
    """The sky, the patch's fit, and q's joint samples of log10 density on its training cells, ``(SAMPLES, n)``."""
    if case in MOCK_CASES:
        sky, catalog, grid, options = mock_patch(seed, case, inducing_points)
    else:
        sky, catalog, grid, options = prior_sky(seed, case)
    options |= {"inducing_points": inducing_points, "method": "newton", "learn_hyperparameters": False} | extra
    fitted = dustgp.fit(catalog, grid, progress=False, seed=seed, **options)
    if fitted.grid != grid:
        raise SystemExit(f"{case}, seed {seed}: the fit changed the grid ({fitted.grid!r})")
    dmap = fitted.predict(grid, samples=SAMPLES, keep_samples=SAMPLES, progress=False)
    return sky, fitted, np.log10(dmap.density_samples.reshape(SAMPLES, -1))


def effective_sample_size(chain: np.ndarray) -> float:
    """Geyer's initial positive sequence estimate for one scalar chain."""
    x = chain - chain.mean()
    n = x.size
    spectrum = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / (x @ x)
    pairs = acf[: n - 1 : 2] + acf[1:n:2]
    stop = np.argmax(pairs < 0) if np.any(pairs < 0) else pairs.size
    tau = -1.0 + 2.0 * pairs[:stop].sum()
    return float(n / max(tau, 1.0))


def hamiltonian_monte_carlo(
    log_post: Any, mode: torch.Tensor, precondition: torch.Tensor, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Draws of ``w`` from ``exp(log_post(w))`` by HMC in ``eta``, ``w = mode + P eta`` (P: ``precondition``).

    Warm-up (:data:`WARMUP`) tunes the step size to ~80% acceptance, then rescales each ``eta`` by its spread over
    the second stage (a diagonal mass matrix, where the mode's Gaussian is off), then tunes the step again. Each draw
    runs :data:`LEAPFROG` steps of a jittered size. Returns the kept draws ``(DRAWS / THIN, n)``, their ``-log_post``
    and the step size and mean acceptance after warm-up.
    """

    def energy(eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eta = eta.detach().requires_grad_(True)
        u = -log_post(mode + precondition @ eta)
        (g,) = torch.autograd.grad(u, eta)
        return u.detach(), g

    n = mode.numel()
    gen = torch.Generator().manual_seed(seed)
    jitter = np.random.default_rng(seed)
    eta = torch.zeros(n, dtype=torch.float64)
    u, g = energy(eta)
    step, accepted, draws, trace, warm = 0.05, [], [], [], []
    for it in range(sum(WARMUP) + DRAWS):
        if it == WARMUP[0] + WARMUP[1]:
            scale = torch.as_tensor(np.clip(np.std(warm, axis=0), 0.3, 3.0))
            precondition, eta = precondition * scale, eta / scale
            u, g = energy(eta)
        p = torch.randn(n, dtype=torch.float64, generator=gen)
        h0 = float(u) + 0.5 * float(p @ p)
        e = step * math.exp(jitter.uniform(-0.2, 0.2))
        x, pp = eta.clone(), p - 0.5 * e * g
        for j in range(LEAPFROG):
            x = x + e * pp
            ux, gx = energy(x)
            pp = pp - (e if j < LEAPFROG - 1 else 0.5 * e) * gx
        h1 = float(ux) + 0.5 * float(pp @ pp)
        acc = math.exp(min(0.0, h0 - h1)) if math.isfinite(h1) else 0.0
        if float(torch.rand(1, generator=gen)) < acc:
            eta, u, g = x, ux, gx
        accepted.append(acc)
        if it < sum(WARMUP):
            step *= math.exp(0.05 * (acc - 0.8))
            if WARMUP[0] <= it < WARMUP[0] + WARMUP[1]:
                warm.append(eta.numpy().copy())
        elif (it - sum(WARMUP)) % THIN == 0:
            draws.append((mode + precondition @ eta).numpy())
            trace.append(float(u))
    return np.array(draws), np.array(trace), {"step": step, "acceptance": float(np.mean(accepted[sum(WARMUP) :]))}


def posterior_mode(likelihood: Any, grid: Grid, h: dict[str, Any], start: np.ndarray) -> dict[str, Any]:
    """The exact posterior of phi on ``grid``'s cells (RBF prior at the hyperparameters ``h``, ``likelihood``) in the
    whitened cell values w (phi = c + L_K w): its log density ``log_post(w)``, ``l_k``, ``c``, its mode (L-BFGS from
    ``start``, a phi) and the Hessian of ``-log_post`` there."""
    xyz = torch.as_tensor(grid.cell_centers_xyz(), dtype=torch.float64)
    gamma = torch.tensor(h["length_scale_pc"], dtype=torch.float64)
    kernel = rbf_cross_covariance(xyz, xyz, gamma, torch.tensor(h["scale_dex2"], dtype=torch.float64))
    n = kernel.shape[0]
    l_k = torch.linalg.cholesky(kernel + 1e-6 * torch.eye(n, dtype=torch.float64))
    c = h["mean_log10_density"]

    def log_post(w: torch.Tensor) -> torch.Tensor:
        """In the whitened cell values w, phi = c + L_K w."""
        return likelihood.log_likelihood(10.0 ** (c + l_k @ w)) - 0.5 * (w @ w)

    w = torch.linalg.solve_triangular(l_k, torch.as_tensor(start - c)[:, None], upper=False)[:, 0]
    w.requires_grad_(True)
    lbfgs = torch.optim.LBFGS(
        [w], max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        loss = -log_post(w)
        loss.backward()
        return loss

    for _ in range(4):
        lbfgs.step(closure)
    mode = w.detach().clone()
    hessian = torch.autograd.functional.hessian(lambda v: -log_post(v), mode)
    return {"log_post": log_post, "l_k": l_k, "c": c, "mode": mode, "hessian": hessian}


def exact_posterior(fitted: Any, start: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Draws of log10 density on the cells from the exact posterior, the covariance (in phi) of the Gaussian at its
    mode, and the chain's diagnostics. ``start``: q's mean of phi, where the search for the mode begins."""
    at = posterior_mode(fitted.likelihood, fitted.grid, fitted.hyperparameters(), start)
    log_post, l_k, c, mode, hessian = (at[k] for k in ("log_post", "l_k", "c", "mode", "hessian"))
    n = mode.numel()
    values, vectors = torch.linalg.eigh(0.5 * (hessian + hessian.T))
    values = values.clamp(min=0.5)
    laplace_cov = (l_k @ ((vectors / values) @ vectors.T) @ l_k.T).numpy()
    # eta ~ N(0, I) under the mode's Gaussian
    w_draws, trace, chain = hamiltonian_monte_carlo(log_post, mode, vectors * values.rsqrt(), seed)
    draws = c + w_draws @ l_k.numpy().T
    ess = np.array([effective_sample_size(draws[:, j]) for j in range(n)])
    front = REGION.start
    chain |= {
        "leapfrog": LEAPFROG,
        "draws": len(draws),
        "ess_min": float(ess[front:].min()),
        "ess_p5": float(np.percentile(ess[front:], 5)),
        "ess_ghost_min": float(ess[:front].min()),
        "ess_log_posterior": effective_sample_size(trace),
    }
    return draws, laplace_cov, chain


def band_scores(samples: np.ndarray, truth: np.ndarray, true_extinction: np.ndarray) -> dict[str, float]:
    """Coverage of the 16-84% bands of density and extinction over the region's cells, and z's spread."""
    region = REGION
    path = np.repeat(TRAIN.path_lengths, TRAIN.n_columns)
    extinction = np.cumsum((10.0**samples * path).reshape(len(samples), TRAIN.n_d, -1), axis=1).reshape(
        len(samples), -1
    )
    lo, med, hi = np.percentile(samples, [16, 50, 84], axis=0)
    e_lo, e_hi = np.percentile(extinction, [16, 84], axis=0)
    z = ((truth - samples.mean(0)) / samples.std(0))[region]
    t, te = truth[region], true_extinction[region]
    return {
        "density_coverage": float(np.mean((t >= lo[region]) & (t <= hi[region]))),
        "extinction_coverage": float(np.mean((te >= e_lo[region]) & (te <= e_hi[region]))),
        "z_mean": float(z.mean()),
        "z_sd": float(z.std()),
        "median_error": float(np.median(np.abs(10.0 ** (med[region] - t) - 1.0))),
        "band_sd_dex": float(np.median(samples.std(0)[region])),
    }


def run_case(seed: int, case: str, inducing_points: int, extra: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    sky, fitted, q = fit_and_map(seed, case, inducing_points, extra)
    truth_grid = sky.density_on(fitted.grid)
    truth = np.log10(truth_grid.reshape(-1))
    true_extinction = sky.extinction_on(fitted.grid).reshape(-1)
    exact, laplace_cov, chain = exact_posterior(fitted, q.mean(0), seed)
    laplace = np.random.default_rng(seed).multivariate_normal(q.mean(0), laplace_cov, SAMPLES, method="cholesky")
    region = REGION
    ratio = (q.std(0) / exact.std(0))[region]
    shift = ((q.mean(0) - exact.mean(0)) / exact.std(0))[region]
    d = np.repeat(TRAIN.d_centers, TRAIN.n_columns)[region]
    by_distance = {
        f"{lo}-{hi}": {
            "q_sd_over_exact": float(np.median(ratio[(d >= lo) & (d < hi)])),
            "q_mean_shift": float(shift[(d >= lo) & (d < hi)].mean()),
        }
        for lo, hi in DISTANCE_BINS
    }
    return {
        "seed": seed,
        "case": case,
        "inducing_points": inducing_points,
        "fit_options": extra,
        "hyperparameters": fitted.hyperparameters(),
        "stars_used": fitted.stars["used"],
        "fit_steps": fitted.iterations,
        "converged": fitted.converged,
        "outlier_fraction": fitted.likelihood.outlier_fraction if fitted.likelihood.noise == "mixture" else None,
        "q": band_scores(q, truth, true_extinction),
        "exact": band_scores(exact, truth, true_extinction),
        "laplace": band_scores(laplace, truth, true_extinction),
        "q_sd_over_exact_p10_p50_p90": np.percentile(ratio, [10, 50, 90]).tolist(),
        "laplace_sd_over_exact_p50": float(np.median((laplace.std(0) / exact.std(0))[region])),
        "q_mean_shift_in_exact_sd": {"mean": float(shift.mean()), "mean_abs": float(np.abs(shift).mean())},
        "by_distance": by_distance,
        "chain": chain,
        "seconds": time.perf_counter() - t0,
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'case':16s} {'seed':>4s} {'cov rho q/exact/lapl':>21s} {'cov A q/exact/lapl':>20s} "
        f"{'z sd q/exact':>13s} {'sd q/exact 10/50/90':>20s} {'shift':>6s} {'acc':>5s} {'ESS':>5s} {'s':>5s}"
    )
    for r in rows:
        q, x, lap = r["q"], r["exact"], r["laplace"]
        cov_rho = "/".join(f"{s['density_coverage']:.1%}" for s in (q, x, lap))
        cov_a = "/".join(f"{s['extinction_coverage']:.1%}" for s in (q, x, lap))
        ratio = "/".join(f"{v:.2f}" for v in r["q_sd_over_exact_p10_p50_p90"])
        print(
            f"{r['case']:16s} {r['seed']:4d} {cov_rho:>21s} {cov_a:>20s} {q['z_sd']:6.2f}/{x['z_sd']:<6.2f} "
            f"{ratio:>20s} {r['q_mean_shift_in_exact_sd']['mean']:+6.2f} {r['chain']['acceptance']:5.2f} "
            f"{r['chain']['ess_min']:5.0f} {r['seconds']:5.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--cases", nargs="+", default=["clean", "realistic"], choices=[*CATALOGUES, *MOCK_CASES])
    parser.add_argument("--inducing-points", type=int, default=1000, help="M of every fit (default %(default)s)")
    parser.add_argument("--distance-nodes", type=int, help="K of the distance quadrature (default: the fit's)")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/exact-m<M>.json)")
    args = parser.parse_args()
    record: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "versions": versions(),
        "mock": {**MOCK, **FIELD, "n_stars": N_STARS},
        "truth": repr(TRUTH),
        "train": repr(TRAIN),
        "mock_train": repr(MOCK_TRAIN),
        "mock_sky": MOCK_SKY,
        "sampler": {"warmup": WARMUP, "draws": DRAWS, "thin": THIN, "leapfrog": LEAPFROG, "map_samples": SAMPLES},
        "rows": [],
    }
    extra = {} if args.distance_nodes is None else {"distance_nodes": args.distance_nodes}
    for seed in args.seeds:
        for case in args.cases:
            record["rows"].append(run_case(seed, case, args.inducing_points, extra))
            print_rows(record["rows"][-1:])
    print()
    print_rows(record["rows"])
    out = args.out or HERE / "results" / f"exact-m{args.inducing_points}.json"
    write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
