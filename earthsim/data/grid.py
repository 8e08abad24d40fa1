"""The spatial grid of a dataset, one concept for the catalog, the models and the scorer.

A grid is either a regular latitude/longitude grid (weather, fluids on the sphere; dims
``latitude``, ``longitude``) or a periodic box (fluids; dims ``y``, ``x``, side ``length``).
Also here: WeatherBench 2's cell-area latitude weights, used by training losses and scores alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from earthsim.data.conventions import LATITUDE_DIM, LONGITUDE_DIM, X_DIM, Y_DIM
from earthsim.errors import EarthsimError

#: How far (degrees) two latitude/longitude grids may differ and still be the same grid.
GRID_TOLERANCE_DEG = 1e-3
LATLON, BOX = "latlon", "box"


@dataclass(frozen=True)
class Axis:
    """A regular coordinate axis: first and last value (inclusive) and number of points."""

    start: float
    stop: float
    size: int

    def values(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.size)


@dataclass(frozen=True)
class Grid:
    """Weather grids give ``latitude``/``longitude`` axes; periodic boxes give ``x``/``y`` sizes and ``length``."""

    latitude: Axis | None = None
    longitude: Axis | None = None
    longitude_convention: str = "[-180, 180)"
    x: int | None = None
    y: int | None = None
    length: float | None = None

    @property
    def kind(self) -> str:
        """``"latlon"`` or ``"box"``."""
        return LATLON if self.latitude is not None else BOX

    @property
    def dims(self) -> tuple[str, str]:
        """``(latitude, longitude)`` on a latitude/longitude grid, else ``(y, x)``."""
        return (LATITUDE_DIM, LONGITUDE_DIM) if self.kind == LATLON else (Y_DIM, X_DIM)

    @property
    def shape(self) -> tuple[int, int]:
        if self.kind == LATLON:
            return (self.latitude.size, self.longitude.size)
        return (self.y, self.x)

    def latitudes(self) -> np.ndarray | None:
        """Latitude of each row in degrees (float64), or None on a box."""
        return None if self.latitude is None else self.latitude.values()

    def longitudes(self) -> np.ndarray | None:
        """Longitude of each column in degrees (float64), or None on a box."""
        return None if self.longitude is None else self.longitude.values()

    @property
    def box_length(self) -> float:
        """Side of the periodic box (2π unless the entry says otherwise)."""
        return float(self.length) if self.length else 2 * math.pi

    @property
    def global_with_poles(self) -> bool:
        """A latitude grid from pole to pole (both poles are grid rows), as spherical transforms need."""
        lat = self.latitude
        return lat is not None and math.isclose(abs(lat.start), 90) and math.isclose(abs(lat.stop), 90) \
            and lat.start * lat.stop < 0

    def check_same(self, other: "Grid", where: str) -> None:
        """Raise naming ``where`` unless ``other`` is this grid (same kind and size; latitudes and longitudes within
        GRID_TOLERANCE_DEG, or the same box side)."""
        if other.kind != self.kind or other.shape != self.shape:
            raise EarthsimError(f"{where}: a {other.kind} grid of {other.shape}, not this {self.kind} grid of "
                                f"{self.shape}")
        if self.kind == LATLON:
            self.check_coordinates(other.latitudes(), other.longitudes(), where)
        elif not math.isclose(self.box_length, other.box_length, rel_tol=1e-9):
            raise EarthsimError(f"{where}: a box of side {other.box_length:g}, not {self.box_length:g}")

    def check_coordinates(self, latitude, longitude, where: str) -> None:
        """Raise naming ``where`` if coordinate values differ from this grid by more than GRID_TOLERANCE_DEG."""
        for name, got, expected in ((LATITUDE_DIM, latitude, self.latitudes()),
                                    (LONGITUDE_DIM, longitude, self.longitudes())):
            got = np.asarray(got, np.float64)
            if got.size != expected.size:
                raise EarthsimError(f"{where}: {name} has {got.size} points, the grid has {expected.size}")
            worst = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if worst > GRID_TOLERANCE_DEG:
                at = int(np.argmax(np.abs(got - expected)))
                raise EarthsimError(f"{where}: {name} differs from the grid by up to {worst:.6g} degrees ({got[at]:.6g} "
                                    f"vs {expected[at]:.6g} at index {at}; tolerance {GRID_TOLERANCE_DEG} degrees)")


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


def cos_latitude_weights(latitude_degrees) -> np.ndarray:
    """ClimaX's and FourCastNet's latitude weights, cos(lat) / mean(cos(lat)): equal to the cell-area weights
    on grids without poles to within the grid spacing squared, but zero (not a half-width cap) at a pole row."""
    weights = np.cos(np.deg2rad(np.asarray(latitude_degrees, dtype=np.float64)))
    return weights / weights.mean()
