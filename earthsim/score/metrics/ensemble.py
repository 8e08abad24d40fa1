"""Ensemble scores as WeatherBench 2 computes them: the fair CRPS, the ensemble mean's RMSE, spread and spread-skill."""

from __future__ import annotations

import numpy as np

from earthsim.score import formulas
from earthsim.score.metrics import SAMPLES, SPATIAL, PerSampleMean, Piece, levels_first, register


@register
class CRPS(PerSampleMean):
    name = "crps"
    needs = "ensemble"
    convention = ("unbiased (fair) ensemble CRPS E|X-Y| - 0.5 E|X-X'| with E|X-X'| = sum_{i!=j}|x_i-x_j| / (M(M-1)) "
                  f"(WB2's CRPS, Zamo & Naveau 2018), pointwise then {SPATIAL}; {SAMPLES}")

    def values(self, piece: Piece) -> np.ndarray:
        return formulas.crps_fair(piece.forecast, piece.truth, axis=3) @ piece.weights


@register
class EnsembleMeanRMSE(PerSampleMean):
    name = "ensemble_mean_rmse"
    needs = "ensemble"
    convention = "RMSE of the ensemble mean: square root of the time-mean MSE of the ensemble mean"
    root = True

    def values(self, piece: Piece) -> np.ndarray:
        return piece.squared_error


@register
class Spread(PerSampleMean):
    name = "spread"
    needs = "ensemble"
    convention = ("square root of the time-mean spatially averaged ensemble variance (unbiased, M - 1 denominator), "
                  "WB2's EnsembleVariance")
    root = True

    def values(self, piece: Piece) -> np.ndarray:
        return piece.ensemble_variance


@register
class SpreadSkill(Spread):
    name = "spread_skill"
    convention = ("sqrt((M+1)/M) * spread / ensemble_mean_rmse (Fortin et al. 2014's finite-ensemble correction, as "
                  "WB2 reports it): 1 for a calibrated ensemble")

    def __init__(self, context):
        super().__init__(context)
        self.squared_error = np.full(context.shape, np.nan)

    def accumulate(self, piece: Piece) -> None:
        super().accumulate(piece)
        self.squared_error[piece.where] = piece.squared_error

    def finish(self) -> dict[str, np.ndarray]:
        members = self.context.members
        spread = np.sqrt(self.sample_mean(self.samples))
        skill = np.sqrt(self.sample_mean(self.squared_error))
        with np.errstate(divide="ignore", invalid="ignore"):
            return {self.name: levels_first(np.sqrt((members + 1) / members) * spread / skill)}
