"""Per-frame image scores as spatiotemporal predictive learning (OpenSTL) reports them: MSE, MAE, SSIM, PSNR."""

from __future__ import annotations

import numpy as np

from earthsim.score import formulas
from earthsim.score.metrics import SAMPLES, PerSampleMean, Piece, register


@register
class FrameMSE(PerSampleMean):
    name = "frame_mse"
    needs = "video"
    convention = ("per-frame squared error summed over pixels, as OpenSTL reports MSE (np.mean((pred - true)**2, "
                  f"axis=(0, 1)).sum()), {SAMPLES}")

    def values(self, piece: Piece) -> np.ndarray:
        return (piece.error * piece.error).sum(axis=-1)


@register
class FrameMAE(PerSampleMean):
    name = "frame_mae"
    headline = False
    needs = "video"
    convention = f"per-frame absolute error summed over pixels, as OpenSTL reports MAE, {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        return np.abs(piece.error).sum(axis=-1)


@register
class SSIM(PerSampleMean):
    name = "ssim"
    needs = "video"
    convention = ("SSIM (Wang et al. 2004) per frame, Gaussian window sigma 1.5 truncated at 3.5 sigma (11 points), "
                  "K1 0.01, K2 0.03, population covariances, reflected borders, mean over the interior; as "
                  "skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False); "
                  f"data_range as the data_range variable; {SAMPLES}")

    def values(self, piece: Piece) -> np.ndarray:
        return formulas.ssim(piece.fields(piece.mean), piece.fields(piece.truth), self.context.data_range)


@register
class PSNR(PerSampleMean):
    name = "psnr"
    needs = "video"
    convention = f"PSNR 10 log10(data_range^2 / MSE) in dB per frame, the MSE a mean over pixels, {SAMPLES}"

    def values(self, piece: Piece) -> np.ndarray:
        return formulas.psnr((piece.error * piece.error).mean(axis=-1), self.context.data_range)
