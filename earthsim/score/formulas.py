"""Score formulas on numpy arrays, in float64, vectorised over every leading axis (the metric classes of
:mod:`earthsim.score.metrics` call them).

Conventions (each stated again in the scorecard's attributes):

- Spatial means are weighted means over the last axis of fields flattened to ``[..., P]``
  (``P = H × W``) with weights summing to 1: WeatherBench 2's cell-area latitude weights
  (:func:`earthsim.data.grid.latitude_weights`, mean 1) divided by the number of points on a
  latitude/longitude grid, uniform weights on a periodic box.
- ``acc``: uncentred anomaly correlation, as WB2's ``ACC``:
  ``Σw f'y' / sqrt(Σw f'² Σw y'²)`` with anomalies ``f' = f - c``, ``y' = y - c`` against the
  day-of-year × hour climatology ``c``.
- ``crps``: the unbiased ("fair") ensemble estimator ``E|X - Y| - ½ E|X - X'|`` with
  ``E|X - X'| = Σ_{i≠j} |x_i - x_j| / (M (M - 1))``, computed from the sorted members as
  ``2 Σ_i (2i - M - 1) x_(i) / (M (M - 1))`` (Zamo & Naveau 2018; WB2's ``CRPS``). The empirical
  (biased) estimator of properscoring/xskillscore divides the pair sum by ``M²`` instead:
  ``crps_empirical = crps_fair + ½ E|X - X'| / M`` (see :func:`crps_biased_from_fair`).
- ``spread``: ensemble variance with the unbiased ``M - 1`` denominator, spatially averaged (its
  time mean's square root is the scorecard's spread).
- ``correlation``: uncentred (cosine) correlation over the domain, ``Σw f y / sqrt(Σw f² Σw y²)``,
  as jax-cfd's ``correlation`` used by Kochkov et al. (2021) and TSM; it equals Pearson's r for
  zero-mean fields such as vorticity on a periodic box.
- Spectra: :func:`zonal_energy_spectrum` (WB2's ``ZonalEnergySpectrum``) and
  :func:`isotropic_energy_spectrum` (shell sums of ``|ω̂|² / (2|k|²)``).
- ``ssim``: Wang et al. (2004) with an 11-point Gaussian window (σ = 1.5, truncated at 3.5σ),
  K1 = 0.01, K2 = 0.03, population covariances, reflected borders and the mean taken over the
  interior (window-radius border cropped), as scikit-image's ``structural_similarity(...,
  gaussian_weights=True, use_sample_covariance=False, data_range=R)``; ``psnr`` =
  ``10 log10(R² / MSE)`` per frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from earthsim.errors import EarthsimError
from earthsim.data.grid import latitude_weights

EARTH_RADIUS_M = 1000 * (6357 + 6378) / 2  # WeatherBench 2's schema.EARTH_RADIUS_M
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def grid_weights(shape: tuple[int, int], latitude: np.ndarray | None = None) -> np.ndarray:
    """Flat float64 weights ``[H × W]`` summing to 1: cell-area weights on a latitude grid, else uniform."""
    height, width = shape
    if latitude is None:
        return np.full(height * width, 1.0 / (height * width))
    per_row = latitude_weights(latitude)
    return np.repeat(per_row / (height * width), width)


def uncentred_correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σw a b / sqrt(Σw a² Σw b²)`` over the last axis (ACC on anomalies; correlation on fields).

    NaN where either field is identically zero (e.g. the ACC of a climatology forecast), as in WB2.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((a * b) @ weights) / np.sqrt(((a * a) @ weights) * ((b * b) @ weights))


def pairwise_spread(members: np.ndarray, axis: int) -> np.ndarray:
    """Unbiased ``E|X - X'| = Σ_{i≠j} |x_i - x_j| / (M (M - 1))`` along ``axis`` via sorting (O(M log M))."""
    x = np.sort(np.asarray(members, np.float64), axis=axis)
    m = x.shape[axis]
    if m < 2:
        raise EarthsimError(f"the CRPS spread term needs at least 2 ensemble members, got {m}")
    shape = [1] * x.ndim
    shape[axis] = m
    coefficient = (2.0 * np.arange(1, m + 1) - m - 1).reshape(shape)
    return 2.0 * (coefficient * x).sum(axis=axis) / (m * (m - 1))


def crps_fair(members: np.ndarray, truth: np.ndarray, axis: int) -> np.ndarray:
    """Pointwise unbiased CRPS ``E|X - Y| - ½ E|X - X'|`` of an ensemble along ``axis``."""
    x = np.asarray(members, np.float64)
    skill = np.abs(x - np.expand_dims(np.asarray(truth, np.float64), axis)).mean(axis=axis)
    return skill - 0.5 * pairwise_spread(x, axis)


def crps_biased_from_fair(fair: np.ndarray, spread_term: np.ndarray, members: int) -> np.ndarray:
    """The empirical CRPS (``M²`` denominator, properscoring/xskillscore) from the fair one.

    ``crps_empirical = E|X - Y| - Σ_{i,j}|x_i - x_j| / (2 M²)``; since ``Σ_{i,j} = M (M - 1) E|X - X'|``
    with the unbiased pairwise spread ``E|X - X'|``, ``crps_empirical = crps_fair + ½ E|X - X'| / M``:
    the empirical score penalises a finite ensemble, the fair one does not.
    """
    return fair + 0.5 * spread_term / members


def threshold_crossing(leads: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """The lead at which ``curve`` first falls below ``threshold``, linearly interpolated.

    Between the last lead at or above the threshold and the first below it; the first lead if
    the curve starts below; +inf if it stays at or above over the leads given; NaN if a NaN value
    (no data at that lead) comes before it falls below, since then nobody knows when it did.
    """
    leads = np.asarray(leads, np.float64)
    curve = np.asarray(curve, np.float64)
    decided = np.flatnonzero((curve < threshold) | np.isnan(curve))
    if decided.size == 0:
        return float("inf")
    first = int(decided[0])
    if np.isnan(curve[first]):
        return float("nan")
    if first == 0:
        return float(leads[0])
    x0, x1, y0, y1 = leads[first - 1], leads[first], curve[first - 1], curve[first]
    return float(x0 + (y0 - threshold) / (y0 - y1) * (x1 - x0))


def zonal_energy_spectrum(fields: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """WB2's zonal energy spectrum per latitude: ``S[k] = C(lat) · c_k |F[k]|²`` over the last (longitude) axis.

    ``F = rfft(f) / L`` (``norm="forward"``), ``c_0 = 1`` and ``c_k = 2`` for ``k > 0`` (both signs of
    frequency), ``C(lat) = 2π R cos(lat)`` the circumference of the latitude circle (R as WB2's
    Earth radius). Input ``[..., lat, lon]``, output ``[..., lat, L//2 + 1]`` in units of m × units².
    Sums over ``k`` give ``(C / L) Σ_l |f_l|²``, the discrete integral of ``f²`` around the circle,
    except that for even ``L`` the Nyquist term is doubled too, exactly as in WB2's code (kept for
    comparability with published WB2 spectra).
    """
    spacing = np.diff(np.asarray(longitude, np.float64))
    if spacing.size and np.max(np.abs(spacing - spacing[0])) > 1e-3:
        raise EarthsimError("the zonal energy spectrum needs equally spaced longitudes")
    coefficients = np.fft.rfft(np.asarray(fields, np.float64), axis=-1, norm="forward")
    power = coefficients.real ** 2 + coefficients.imag ** 2
    power[..., 1:] *= 2.0
    circumference = 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(np.asarray(latitude, np.float64)))
    return power * circumference[:, None]


def wavenumber_shells(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    """For ``rfft2`` coefficients of a periodic ``[H, W]`` field: the integer shell of each
    (``round(|n|)``, n the integer wavenumber vector), the multiplicity of each rfft column (2 for
    columns standing for ±k_x, 1 for k_x = 0 and the Nyquist column of even W), and the last shell
    kept, ``min(H, W) // 2`` (corner modes beyond it are left out)."""
    height, width = shape
    ny = np.fft.fftfreq(height, 1.0 / height)
    nx = np.fft.rfftfreq(width, 1.0 / width)
    magnitude = np.sqrt(ny[:, None] ** 2 + nx[None, :] ** 2)
    shells = np.rint(magnitude).astype(np.int64)
    multiplicity = np.full(nx.size, 2.0)
    multiplicity[0] = 1.0
    if width % 2 == 0:
        multiplicity[-1] = 1.0
    return shells, np.broadcast_to(multiplicity, shells.shape), min(height, width) // 2


def isotropic_energy_spectrum(fields: np.ndarray, length: float = 2 * np.pi, from_vorticity: bool = True) -> np.ndarray:
    """Isotropic spectrum ``E(k)`` of fields ``[..., H, W]`` on a periodic box of side ``length``.

    With ``ω̂ = fft2(ω) / (H W)`` (so that ``mean(ω²) = Σ |ω̂|²``) and physical wavenumbers
    ``k = 2π n / length``: ``E(k) = Σ_{round(|n|) = k} |ω̂|² / (2 |k|²)`` from vorticity — the kinetic
    energy per shell, summing to ``½ mean(|u|²)`` — or ``Σ ½ |û|²`` (the variance per shell) for
    other fields (``from_vorticity=False``). Output ``[..., K + 1]`` for shells ``0..K``,
    ``K = min(H, W) // 2``; shell 0 holds the mean (0 for vorticity, whose mean carries no energy).
    """
    fields = np.asarray(fields, np.float64)
    height, width = fields.shape[-2:]
    coefficients = np.fft.rfft2(fields, axes=(-2, -1)) / (height * width)
    power = coefficients.real ** 2 + coefficients.imag ** 2
    shells, multiplicity, last = wavenumber_shells((height, width))
    scale = 0.5 * multiplicity
    if from_vorticity:
        k_squared = (2 * np.pi / length) ** 2 * (np.fft.fftfreq(height, 1.0 / height)[:, None] ** 2
                                                 + np.fft.rfftfreq(width, 1.0 / width)[None, :] ** 2)
        scale = np.where(k_squared > 0, scale / np.where(k_squared > 0, k_squared, 1.0), 0.0)
    keep = shells <= last
    flat = (power * scale)[..., keep]
    one_hot = np.zeros((int(keep.sum()), last + 1))
    one_hot[np.arange(one_hot.shape[0]), shells[keep]] = 1.0
    return flat @ one_hot


def spectrum_bands(last: int) -> dict[str, tuple[int, int]]:
    """Dyadic bands of shells ``1..last``: low ``[1, last/4]``, mid ``(last/4, last/2]``, high ``(last/2, last]``."""
    quarter, half = max(1, last // 4), max(1, last // 2)
    return {"low": (1, quarter), "mid": (quarter + 1, half), "high": (half + 1, last)}


def band_log_ratio(predicted: np.ndarray, truth: np.ndarray, last: int) -> dict[str, np.ndarray]:
    """Mean over the shells of each band of ``ln(E_pred(k) / E_true(k))`` (0: right energy; < 0: too little)."""
    ratio = np.log(np.asarray(predicted, np.float64) / np.asarray(truth, np.float64))
    return {name: ratio[..., lo:hi + 1].mean(axis=-1) if hi >= lo else np.full(ratio.shape[:-1], np.nan)
            for name, (lo, hi) in spectrum_bands(last).items()}


def _gaussian(x: np.ndarray) -> np.ndarray:
    """Gaussian filter of the last two axes (σ = 1.5, truncate 3.5, reflected borders), none along the others."""
    sigma = [0.0] * (x.ndim - 2) + [SSIM_SIGMA, SSIM_SIGMA]
    return ndimage.gaussian_filter(x, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """Mean SSIM of each image pair over the last two axes (Wang et al. 2004, Gaussian window; see module doc)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    height, width = a.shape[-2:]
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(height, width) < 2 * radius + 1:
        raise EarthsimError(f"SSIM's {2 * radius + 1}-point Gaussian window needs images of at least "
                            f"{2 * radius + 1} × {2 * radius + 1} points, got {height} × {width}")
    mu_a, mu_b = _gaussian(a), _gaussian(b)
    var_a = _gaussian(a * a) - mu_a * mu_a
    var_b = _gaussian(b * b) - mu_b * mu_b
    cov = _gaussian(a * b) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    interior = index[..., radius:height - radius, radius:width - radius]
    return interior.mean(axis=(-2, -1))


def psnr(mse: np.ndarray, data_range: float) -> np.ndarray:
    """Peak signal-to-noise ratio ``10 log10(R² / MSE)`` in dB (inf for a perfect frame)."""
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / np.asarray(mse, np.float64))
