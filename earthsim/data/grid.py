"""Grid geometry shared by training losses and scoring: WeatherBench 2 cell-area latitude weights."""

from __future__ import annotations

import numpy as np

from earthsim.errors import EarthsimError


def latitude_weights(latitude_degrees) -> np.ndarray:
    """Cell-area weights for a regular latitude grid, normalised to mean 1 (WeatherBench 2's convention).

    Each point stands for the band between the midpoints to its neighbours, clipped at the poles,
    so a grid that includes ±90° gives its pole rows half-width caps.
    """
    lat = np.deg2rad(np.asarray(latitude_degrees, dtype=np.float64))
    if lat.size < 2:
        raise EarthsimError("latitude weights need at least two latitudes")
    spacing = np.diff(lat)
    if not np.allclose(spacing, spacing[0], rtol=1e-6, atol=1e-9):
        raise EarthsimError("latitude weights need equally spaced latitudes")
    delta = abs(spacing[0])
    ordered = np.sort(lat)
    bounds = np.clip(np.concatenate([ordered - delta / 2, [ordered[-1] + delta / 2]]), -np.pi / 2, np.pi / 2)
    weights = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    weights = weights / weights.mean()
    return weights if lat[0] <= lat[-1] else weights[::-1].copy()
