"""Beyond one machine: fit a large region as overlapping tiles on a Dask cluster and blend them into one map.

A region too big for one fit (docs: Method §5 costs grow with the number of cells and of inducing points) is split
into tiles in l, b and distance (:func:`plan_tiles`). Each tile is fitted on its own training grid, which is its
*core* (the part of the region it is responsible for) plus a margin of ``overlap`` cells shared with each
neighbour, and predicted on its piece of the prediction grid. :func:`fit_tiles` runs one task per tile on a
``dask.distributed`` cluster and :func:`merge_tiles` blends the pieces into one
:class:`~dustgp.posterior_map.PosteriorMap`.

Blending
--------
Across each boundary between two neighbouring cores, at ``c``, the two tiles' weights change over the strip
``c - h .. c + h`` (``h = blend ×`` the shared margin on the narrower side) with a cosine taper:

.. math::

    w_{\\mathrm{upper}}(x) = \\sin^2\\!\\Big(\\frac{\\pi}{2}\\,\\frac{x - (c - h)}{2h}\\Big), \\qquad
    w_{\\mathrm{lower}}(x) = 1 - w_{\\mathrm{upper}}(x)

(``sin² t + cos² t = 1`` makes the pair sum to one, and the taper has zero slope at both ends of the strip, so a
merged map has no kink where the strip starts). A tile's weight is the product of its weights along l, b and d;
with a tiling that is a product of per-axis splits, the weights of all tiles sum to one everywhere. The outer
sides of the outermost tiles carry weight 1 out to infinity, so prediction cells beyond the training grid belong
to the nearest tile. Weights reach zero at the far end of a tile's margin: the cells nearest a tile's training
edge, where it knows least (no stars beyond the edge constrain them), count least.

Merged summaries are weighted averages, cell by cell: means exactly (a weighted average of the tiles' posterior
means), standard deviations as the weighted average of the tiles' standard deviations (exact when the tiles'
errors are fully correlated, an upper bound for a linear blend otherwise), and **percentiles are blended too,
which is an approximation**: the weighted average of two distributions' percentiles is not a percentile of
anything in particular. It is exact where one tile holds all the weight (everywhere outside the blend strips),
and close inside them where neighbouring tiles agree. Kept samples are blended the same way (sample k of the
merged map is the weighted average of sample k of each tile; inside a strip this mixes independent draws and so
narrows their spread). Extinction summaries are blended the same way; along l and b this equals integrating the
blended density (the weights do not depend on distance there).

Distance tiles and the foreground
---------------------------------
Only the nearest distance tiles have foreground ghost cells (docs: Method §2). A far tile starts at its training
``d_min`` with no ghost cells; the dust in front of it is taken from the near tiles, which are fitted first
(tiles run layer by layer, near to far). After a distance layer is done, its tiles are merged (with their l, b
weights only) into that layer's extinction map, and each star of the next layer gets a *per-star foreground
subtraction*:

.. math::

    A_i \\to A_i - \\bar A_{\\mathrm{fg}}(l_i, b_i), \\qquad
    \\sigma_i^2 \\to \\sigma_i^2 + \\sigma_{\\mathrm{fg}}^2(l_i, b_i)

where ``A_fg`` and ``sigma_fg`` are the near layer's posterior mean and standard deviation of extinction at the
far tile's ``d_min`` (linear in distance within a cell, as the model's own integral is), in the prediction-grid
column holding the star. Treating the foreground's uncertainty as independent noise per star is an
approximation: stars in one column share the same foreground error. The far tile's predicted extinction is then
shifted by the same foreground at its piece's near edge: mean plus ``A_fg``, variance plus ``sigma_fg²``, and
percentiles by ``A_fg + z_q (sqrt(sigma² + sigma_fg²) - sigma)`` (exact for Gaussian foreground and tile
posteriors, shape-preserving otherwise).

The package's modules: :mod:`~dustgp.tiles.geometry` (the plan and the weights, pure),
:mod:`~dustgp.tiles.task` (what travels to and from a task, and the default task), :mod:`~dustgp.tiles.cluster`
(running a layer on Dask with retries), :mod:`~dustgp.tiles.merge` (blending pieces into one map),
:mod:`~dustgp.tiles.foreground` (the far tiles' foreground) and :mod:`~dustgp.tiles.mosaic` (:func:`fit_tiles`).
Tasks ship plain numpy arrays both ways; no torch object crosses a process boundary.
"""

from __future__ import annotations

from .geometry import Tile, TileError, plan_tiles
from .merge import merge_tiles
from .mosaic import fit_tiles
from .task import TileJob, TilePrediction, TileStars, fit_tile

__all__ = [
    "Tile",
    "TileError",
    "TileJob",
    "TilePrediction",
    "TileStars",
    "fit_tile",
    "fit_tiles",
    "merge_tiles",
    "plan_tiles",
]
