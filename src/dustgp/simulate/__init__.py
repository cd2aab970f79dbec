r"""Simulated skies with known truth: the paper's Section 3 experiment (docs: Method §9), a realistic region, and a
draw from the model's own prior.

Truth: a constant background density plus overdensities (:class:`Structure`). Three skies are built in:

* ``structures="random"`` (the default, the paper's Section 3): a 1.6e-3 mag/pc background (0.5 mag across
  180-500 pc) plus ``n_clumps`` isotropic Gaussian clumps at random places in the region;
* ``structures="realistic"`` (:func:`realistic_region`): over a low background (3e-4 mag/pc), an elongated
  filament, a dense compact core, a near sheet (thin in distance, wide on the sky) and a far clump, placed at
  fixed fractions of the region's axes so that no structure lies on another's central sightline;
* ``structures="gaussian-field"`` (:class:`GaussianField`): the background times 10 to the power of a Gaussian
  process with the model's RBF kernel, the prior the model assumes; on it, bands that miss are the inference's.

Any tuple of :class:`Clump`, :class:`Filament`, :class:`Sheet` and :class:`GaussianField` may be given instead. The
background fills the foreground too (0 .. d_min), as a uniform interstellar medium would; ``foreground=False``
empties it instead.

Stars are uniform in l, b and in d³ (uniform space density); their extinction is integrated on a fine truth grid
(100 × 100 × 115 cells in the paper) with the same partial-cell rule the model uses. The observation model, each
part off unless asked except the first:

1. **Extinction noise** (the paper: ``noise = 0.1``, ``noise_floor = 0``): Gaussian, with

   .. math:: \sigma_{A,i} = \sqrt{\sigma_\mathrm{floor}^2 + (f_A\,A_{\mathrm{true},i})^2} .

2. **Distance errors** (``distance_errors = (f_min, f_max)``), Gaia-like: each star gets a fractional 1-sigma
   error :math:`f_i` in [f_min, f_max] (log-uniform, or growing log-linearly with distance), and its catalogue
   distance is scattered log-normally from the true one,

   .. math:: \ln d_{\mathrm{obs},i} = \ln d_{\mathrm{true},i} + f_i\,\varepsilon_i, \quad
             \varepsilon_i \sim \mathcal{N}(0, 1).

   Log-normal, because the distance posteriors of parallax-based catalogues (Bailer-Jones et al. 2021;
   Anders et al. 2022) are skewed to large distances, and because it keeps every distance positive. The
   catalogue reports :math:`\sigma_{d,i} = f_i\,d_{\mathrm{obs},i}` and the 16th/84th percentiles
   :math:`d_{\mathrm{obs},i}\,e^{\mp f_i}` (those of :math:`d_\mathrm{true}` given :math:`d_\mathrm{obs}` under a
   prior flat in :math:`\ln d`; their half-difference :math:`d_\mathrm{obs}\sinh f_i` is within 0.7% of
   :math:`\sigma_{d,i}` for :math:`f_i \le 0.2`). The reported errors are exact: the scatter is what they say.
   Extinction stays that to the *true* distance; stars scattered off the region stay in the catalogue.

3. **Outliers** (``outlier_fraction > 0``): that share of the stars (exactly ``round(fraction × n)``, chosen
   at random) get :math:`\mathcal{U}(a_\mathrm{lo}, a_\mathrm{hi})` mag (default 0.3-1.5) added to their
   observed extinction with their quoted sigma unchanged, as circumstellar dust, bad photometry or an unresolved
   binary would do.

Random numbers come from generators seeded by ``seed`` only (never numpy's global state). The paper's draws
(clumps, positions, extinction noise) come from ``numpy.random.default_rng(seed)`` in a fixed order, and the
distance errors and the outliers from two further independent streams spawned from ``SeedSequence(seed)``, so
neither option changes any other draw: a sky with distance errors and outliers has the same stars, truth and
extinction noise as its clean twin (the same call without those options), and the paper's sky is the same
whatever new options exist.

The package's modules: :mod:`~dustgp.simulate.structures` (the shapes and the total density),
:mod:`~dustgp.simulate.truths` (the two built-in truths of structures), :mod:`~dustgp.simulate.field` (the
Gaussian field), :mod:`~dustgp.simulate.observe` (stars and the
observation model), :mod:`~dustgp.simulate.sky` (the :class:`SimulatedSky` record) and
:mod:`~dustgp.simulate.draw` (:func:`simulate`, :func:`paper_experiment`).
"""

from __future__ import annotations

from .draw import StructureSpec as StructureSpec
from .draw import paper_experiment, simulate
from .field import GaussianField
from .observe import DistanceErrorModel as DistanceErrorModel
from .sky import SimulatedSky
from .structures import Clump, Filament, Sheet, Structure, true_density
from .truths import BACKGROUND as BACKGROUND
from .truths import REALISTIC_BACKGROUND as REALISTIC_BACKGROUND
from .truths import realistic_region

# the constants and type aliases imported above are importable from here too, but not part of ``import *``
__all__ = [
    "Clump",
    "Filament",
    "GaussianField",
    "Sheet",
    "SimulatedSky",
    "Structure",
    "paper_experiment",
    "realistic_region",
    "simulate",
    "true_density",
]
