"""Deterministic scores as WeatherBench 2 computes them (they apply to fluids too), ACC, and zonal energy spectra."""

from __future__ import annotations

import numpy as np

from earthsim.data.conventions import LEAD_DIM
from earthsim.score import formulas
from earthsim.score.metrics import (SAMPLES, SPATIAL, Metric, PerSampleMean, Piece, SpectrumSums, levels_first,
                                    nan_mean, register)

LAT_BANDS = {"all": (-90.0, 90.0), "south_extratropics": (-60.0, -30.0), "tropics": (-20.0, 20.0),
             "north_extratropics": (30.0, 60.0)}


@register
class MSE(PerSampleMean):
    name = "mse"
    headline = False
    convention = f"mean squared error (forecast - truth)^2: {SPATIAL}; {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        return piece.squared_error


@register
class RMSE(MSE):
    name = "rmse"
    headline = True
    root = True
    convention = "square root of the time-mean MSE (WeatherBench 2's headline RMSE: sqrt after the time mean)"


@register
class RMSEPerInit(MSE):
    name = "rmse_per_init"
    headline = True
    convention = f"RMSE of each initial time (sqrt before the time mean, WB2's RMSESqrtBeforeTimeAvg), {SAMPLES}"

    def finish(self) -> dict[str, np.ndarray]:
        return {self.name: levels_first(self.sample_mean(np.sqrt(self.samples)))}


@register
class MAE(PerSampleMean):
    name = "mae"
    convention = f"mean absolute error |forecast - truth|: {SPATIAL}; {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        return np.abs(piece.error) @ piece.weights


@register
class Bias(PerSampleMean):
    name = "bias"
    convention = f"mean error (forecast - truth): {SPATIAL}; {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        return piece.error @ piece.weights


@register
class ACC(PerSampleMean):
    name = "acc"
    needs = "climatology"
    convention = ("uncentred anomaly correlation (WB2's ACC): sum w f'y' / sqrt(sum w f'^2 sum w y'^2) with anomalies "
                  "against the climatology at the valid time (day-of-year x hour for weather; the training mean at "
                  "each point for a fluid on the sphere), per initial time, then averaged over initial times and "
                  "trajectories (NaN-skipping where the climatology has no value)")

    def values(self, piece: Piece) -> np.ndarray:
        c = piece.climatology
        return formulas.uncentred_correlation(piece.mean - c, piece.truth - c, piece.weights)

    def sample_mean(self, samples: np.ndarray) -> np.ndarray:
        return nan_mean(samples)


def lat_bands(latitude: np.ndarray) -> dict[str, np.ndarray]:
    """Grid latitudes in each band of LAT_BANDS (``all``: every latitude but the poles); empty bands dropped."""
    bands = {}
    for name, (lo, hi) in LAT_BANDS.items():
        inside = (np.abs(latitude) < 90.0) if name == "all" else (latitude >= lo) & (latitude <= hi)
        if inside.any():
            bands[name] = inside
    return bands


@register
class ZonalSpectrum(Metric):
    name = "zonal_spectrum"
    needs = "latlon"
    convention = ("WB2's ZonalEnergySpectrum: S[k] = C(lat) c_k |rfft(f)/L|^2 along longitude (c_0 = 1, c_k = 2), "
                  "C(lat) = 2 pi R cos(lat), R = 6367.5 km; mean over initial times (and trajectories), then a "
                  "plain mean over the grid latitudes inside each lat_band (all: every latitude but the poles)")
    outputs = {"zonal_spectrum": (LEAD_DIM, "lat_band", "zonal_wavenumber"),
               "zonal_spectrum_truth": (LEAD_DIM, "lat_band", "zonal_wavenumber")}

    @classmethod
    def conventions(cls) -> dict[str, str]:
        return {"zonal_spectrum": cls.convention,
                "zonal_spectrum_truth": "zonal_spectrum of the truth at the same valid times"}

    def __init__(self, context):
        super().__init__(context)
        self.spectra = SpectrumSums(context.shape[1])

    def accumulate(self, piece: Piece) -> None:
        grid = self.context.grid
        for key, values in (("zonal_spectrum", piece.mean), ("zonal_spectrum_truth", piece.truth)):
            self.spectra.add(key, piece, formulas.zonal_energy_spectrum(piece.fields(values), grid.latitudes(),
                                                                        grid.longitudes()))

    def finish(self) -> dict[str, np.ndarray]:
        bands = lat_bands(self.context.grid.latitudes()).values()
        return {key: levels_first(np.stack([self.spectra.mean(key)[:, :, inside].mean(axis=2) for inside in bands],
                                           axis=2)) for key in self.spectra.sums}

    def coords(self) -> dict[str, list]:
        width = self.context.grid.shape[1]
        return {"lat_band": list(lat_bands(self.context.grid.latitudes())),
                "zonal_wavenumber": list(range(width // 2 + 1))}
