"""Fluid scores as neural-PDE papers report them: relative L2, vorticity correlation and the time it stays high
(with a bootstrap interval and the replicates for paired comparisons), and isotropic energy spectra on the periodic
box."""

from __future__ import annotations

import numpy as np

from earthsim.data.conventions import LEAD_DIM
from earthsim.score import formulas
from earthsim.score.metrics import SAMPLES, Metric, PerSampleMean, Piece, SpectrumSums, levels_first, register

THRESHOLDS = (0.95, 0.8)
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 0


@register
class RelativeL2(PerSampleMean):
    name = "rel_l2"
    needs = "fluid"
    convention = f"relative L2 error sqrt(sum w (f-y)^2 / sum w y^2) per frame, {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(piece.squared_error / ((piece.truth * piece.truth) @ piece.weights))


@register
class Correlation(PerSampleMean):
    name = "correlation"
    needs = "fluid"
    convention = ("uncentred (cosine) correlation over the domain sum w f y / sqrt(sum w f^2 sum w y^2) per frame "
                  "(jax-cfd's correlation, Kochkov et al. 2021, TSM; equals Pearson's r for zero-mean vorticity), "
                  f"{SAMPLES}")

    def values(self, piece: Piece) -> np.ndarray:
        return piece.correlation


@register
class DecorrelationTime(Correlation):
    name = "decorrelation_time"
    convention = ("lead time at which the averaged correlation first falls below the threshold, linearly "
                  "interpolated between the last lead at or above it and the first below it; inf: it "
                  "stays above over all leads scored; the first lead if it starts below; NaN: a lead "
                  "without a defined correlation (every frame left out, or a zero field) comes first")
    bootstrap_convention = (f"the decorrelation time of each of {BOOTSTRAP_REPLICATES} bootstrap resamples of the "
                            "trajectories (of the initial times when there is one trajectory), drawn with the fixed "
                            f"seed {BOOTSTRAP_SEED}: stores scored on the same initial times and trajectories share "
                            "their resamples, so the difference of two models' replicates is a paired bootstrap")
    outputs = {"decorrelation_time": ("threshold",), "decorrelation_time_low": ("threshold",),
               "decorrelation_time_high": ("threshold",), "decorrelation_time_bootstrap": ("threshold", "replicate")}
    missing_text = "no data"
    infinite_text = "> last lead"
    lead_units = True

    @classmethod
    def conventions(cls) -> dict[str, str]:
        return {"decorrelation_time": cls.convention,
                "decorrelation_time_low": ("2.5th percentile of decorrelation_time_bootstrap: "
                                           + cls.bootstrap_convention),
                "decorrelation_time_high": "97.5th percentile of decorrelation_time_bootstrap",
                "decorrelation_time_bootstrap": cls.bootstrap_convention}

    def finish(self) -> dict[str, np.ndarray]:
        replicates = np.stack([self._crossings(resample) for resample in self._resamples()], axis=-1)  # [K, T, B]
        low, high = np.quantile(replicates, [0.025, 0.975], axis=-1, method="inverted_cdf")  # no inf - inf
        return {self.name: self._crossings(self.samples), "decorrelation_time_low": low,
                "decorrelation_time_high": high, "decorrelation_time_bootstrap": replicates}

    def _crossings(self, samples: np.ndarray) -> np.ndarray:
        """``[K, thresholds]`` crossing times of the sample-averaged correlation of ``samples`` ``[I, L, R, K]``."""
        curve = self.sample_mean(samples)  # [L, K]
        return np.array([[formulas.threshold_crossing(self.context.leads, curve[:, k], t) for t in THRESHOLDS]
                         for k in range(curve.shape[1])])

    def _resamples(self):
        """The bootstrap resamples of the samples, trajectories drawn with replacement (initial times if one)."""
        axis = 2 if self.samples.shape[2] > 1 else 0
        count = self.samples.shape[axis]
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        for _ in range(BOOTSTRAP_REPLICATES):
            yield np.take(self.samples, rng.integers(0, count, count), axis=axis)

    def coords(self) -> dict[str, list]:
        return {"threshold": list(THRESHOLDS), "replicate": list(range(BOOTSTRAP_REPLICATES))}


@register
class EnergySpectrum(Metric):
    name = "energy_spectrum"
    needs = "box"
    convention = ("isotropic spectrum per integer wavenumber shell round(|n|): from vorticity the kinetic "
                  "energy E(k) = sum_shell |w_hat|^2 / (2|k|^2) with w_hat = fft2(w)/(H W) and k = 2 pi n / L "
                  "(sums to 0.5 mean |u|^2); other fields 0.5 sum_shell |u_hat|^2; shells up to min(H, W)//2; "
                  "mean over initial times and trajectories")
    outputs = {"energy_spectrum": (LEAD_DIM, "wavenumber"), "energy_spectrum_truth": (LEAD_DIM, "wavenumber"),
               "spectrum_log_ratio": (LEAD_DIM, "band")}

    @classmethod
    def conventions(cls) -> dict[str, str]:
        return {"energy_spectrum": cls.convention,
                "energy_spectrum_truth": "energy_spectrum of the truth at the same valid times",
                "spectrum_log_ratio": ("mean over the shells of each band of ln(E_forecast(k) / E_truth(k)): bands low "
                                       "[1, K/4], mid (K/4, K/2], high (K/2, K] with K = min(H, W)//2; 0 is right, "
                                       "< 0 too little energy")}

    def __init__(self, context):
        super().__init__(context)
        self.spectra = SpectrumSums(context.shape[1])

    def accumulate(self, piece: Piece) -> None:
        grid = self.context.grid
        for key, values in (("energy_spectrum", piece.mean), ("energy_spectrum_truth", piece.truth)):
            self.spectra.add(key, piece, formulas.isotropic_energy_spectrum(piece.fields(values), grid.box_length,
                                                                            from_vorticity=self.context.vorticity))

    def finish(self) -> dict[str, np.ndarray]:
        forecast, truth = (self.spectra.mean(k) for k in ("energy_spectrum", "energy_spectrum_truth"))
        last = self._last_shell()
        with np.errstate(divide="ignore", invalid="ignore"):
            bands = formulas.band_log_ratio(forecast, truth, last)
        ratio = np.stack([bands[b] for b in formulas.spectrum_bands(last)], axis=-1)
        return {"energy_spectrum": levels_first(forecast), "energy_spectrum_truth": levels_first(truth),
                "spectrum_log_ratio": levels_first(ratio)}

    def _last_shell(self) -> int:
        return min(self.context.grid.shape) // 2

    def coords(self) -> dict[str, list]:
        return {"wavenumber": list(range(self._last_shell() + 1)),
                "band": list(formulas.spectrum_bands(self._last_shell()))}
