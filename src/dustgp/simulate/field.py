r"""A truth drawn from the model's own prior: a log-normal Gaussian-process field (:class:`GaussianField`).

The realistic skies (:func:`~dustgp.simulate.realistic_region`) test the map where its prior is wrong: sharp
structures that no stationary RBF draws. A sky drawn from the prior itself tests the inference alone. With the
hyperparameters held at the field's, the 16-84% bands of an exact posterior hold the truth 68% of the time, so what a
fit misses there is the approximation's (the inducing points, q(u), the hyperparameters it learns), not the prior's
(docs: Design notes, "A sky drawn from the prior").

The field is the density above a background :math:`\rho_0`,

.. math::

    \rho(\mathbf{x}) - \rho_0 = \rho_0\,\big(10^{g(\mathbf{x})} - 1\big), \qquad
    g \sim \mathcal{GP}\Big(0,\ \alpha \exp\big(-\tfrac12 \textstyle\sum_k (\Delta x_k/\gamma_k)^2\big)\Big),

so that with the sky's background equal to :math:`\rho_0` the total density is :math:`\rho_0\,10^{g}`: the paper's
prior on phi = log10(density) (constant mean :math:`\log_{10}\rho_0`, RBF kernel in heliocentric x, y, z; docs:
Method §1). :math:`g` is drawn by random Fourier features (Rahimi & Recht 2007),

.. math::

    g(\mathbf{x}) = \sqrt{2\alpha/J}\ \sum_{j=1}^{J} \cos(\boldsymbol\omega_j \cdot \mathbf{x} + \beta_j), \qquad
    \omega_{jk} \sim \mathcal{N}(0, \gamma_k^{-2}),\ \beta_j \sim \mathcal{U}(0, 2\pi),

whose covariance is the RBF kernel in expectation over the features, and, for one draw of them,
:math:`(\alpha/J) \sum_j \cos(\boldsymbol\omega_j \cdot \Delta\mathbf{x})` (:meth:`GaussianField.covariance`):
within about :math:`\alpha/\sqrt{2J}` of the kernel. The field is defined everywhere, so it can be evaluated on any
grid without interpolation, and it is reproduced exactly from its numbers and its seed. In front of ``d_min`` the
density is the background alone, as in the other skies: the simulator integrates each star's foreground as one cell
and a prediction grid as its own ghost cells, which agree only on a foreground without structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .structures import Structure

__all__ = ["GaussianField"]

#: Points evaluated at once: a (chunk, n_features) float64 block, 32 MB at 2000 features.
_CHUNK = 2000


@dataclass(frozen=True)
class GaussianField(Structure):
    """A log-normal Gaussian-process field about a background density (see the module docstring).

    Attributes
    ----------
    mean_density : float
        :math:`\\rho_0`, mag/pc: the field's median density; give the sky the same background.
    length_scale : tuple of float
        RBF scale lengths :math:`(\\gamma_x, \\gamma_y, \\gamma_z)` in heliocentric x, y, z, pc.
    scale : float
        :math:`\\alpha`, the prior variance of log10 density, dex².
    seed : int
        Seeds the features: the same five numbers and seed give the same field.
    n_features : int
        J, the random Fourier features; the covariance of one draw is within about ``scale / sqrt(2 J)`` of the
        kernel.
    d_min : float
        No field in front of this distance, pc: there the density is the background alone.
    name : str
        A label, for reports.
    """

    mean_density: float
    length_scale: tuple[float, float, float]
    scale: float
    seed: int = 0
    n_features: int = 2000
    d_min: float = 0.0
    name: str = "gaussian field"

    def __post_init__(self) -> None:
        gamma = np.asarray(self.length_scale, dtype=float)
        if gamma.shape != (3,) or not np.all(np.isfinite(gamma) & (gamma > 0)):
            raise ValueError(f"length_scale: expected three positive lengths in pc, got {self.length_scale}")
        if not (np.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"scale: expected a variance >= 0 dex², got {self.scale}")
        if not (np.isfinite(self.mean_density) and self.mean_density > 0):
            raise ValueError(f"mean_density: expected a density > 0 mag/pc, got {self.mean_density}")
        if not (np.isfinite(self.d_min) and self.d_min >= 0):
            raise ValueError(f"d_min: expected a distance >= 0 pc, got {self.d_min}")
        if int(self.n_features) < 1:
            raise ValueError(f"n_features: expected at least 1, got {self.n_features}")

    @cached_property
    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies ``(J, 3)``, 1/pc, and phases ``(J,)``, rad."""
        rng = np.random.default_rng(self.seed)
        omega = rng.standard_normal((int(self.n_features), 3)) / np.asarray(self.length_scale, dtype=float)
        beta = rng.uniform(0.0, 2.0 * np.pi, int(self.n_features))
        return omega, beta

    @property
    def peak(self) -> float:  # type: ignore[override]
        """The density above the background at +3 sigma of the field, mag/pc (a field has no single peak)."""
        return self.mean_density * (10.0 ** (3.0 * np.sqrt(self.scale)) - 1.0)

    def log_density(self, xyz: np.ndarray) -> np.ndarray:
        """g(x), dex: log10 of the density over ``mean_density`` at heliocentric ``xyz`` (pc, shape (..., 3))."""
        xyz = np.asarray(xyz, dtype=float)
        flat = torch.as_tensor(xyz.reshape(-1, 3), dtype=torch.float64)
        omega, beta = (torch.as_tensor(a) for a in self._features)
        amplitude = np.sqrt(2.0 * self.scale / len(beta))
        out = np.empty(flat.shape[0])
        for start in range(0, flat.shape[0], _CHUNK):
            phase = flat[start : start + _CHUNK] @ omega.T + beta
            out[start : start + _CHUNK] = (torch.cos(phase).sum(dim=1) * amplitude).numpy()
        return out.reshape(xyz.shape[:-1])

    def covariance(self, lag: np.ndarray) -> np.ndarray:
        """Covariance of this draw of g at separations ``lag`` (pc, shape (..., 3)), dex²: ``(α/J) Σ cos(ω·Δ)``."""
        omega, _ = self._features
        return self.scale * np.cos(np.asarray(lag, dtype=float) @ omega.T).mean(axis=-1)

    def _density(self, xyz: np.ndarray, l: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.where(d >= self.d_min, self.mean_density * (10.0 ** self.log_density(xyz) - 1.0), 0.0)

    def sightline(self) -> tuple[float, float]:
        """A field has no single densest point: give :meth:`peak_distance` its sightline."""
        raise ValueError(f"{self.name}: a Gaussian field has no single densest point; give the sightline (l, b)")
