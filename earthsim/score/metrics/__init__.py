"""Scores as small classes: each accumulates over the pieces of a forecast store, block by block, then finishes.

A metric is one class, registered by name with :func:`register`, in the module of its group:
:mod:`~earthsim.score.metrics.weather` (deterministic scores, ACC, zonal spectra),
:mod:`~earthsim.score.metrics.ensemble`, :mod:`~earthsim.score.metrics.fluid` and
:mod:`~earthsim.score.metrics.video`. For one variable of one store, the scorer builds every metric
that applies from a :class:`Context`, hands each :class:`Piece` of forecast and truth to
:meth:`Metric.accumulate`, and reads the scorecard's values from :meth:`Metric.finish`. A
:class:`Piece` computes the quantities several metrics share (ensemble mean, error, squared error,
correlation) once, when first asked.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from earthsim.data.conventions import LEAD_DIM
from earthsim.data.grid import Grid
from earthsim.score import formulas

#: The conditions under which a metric applies (``Metric.needs``).
NEEDS = {
    None: "always",
    "climatology": "a truth with a climatology (the entry's, or --climatology)",
    "ensemble": "an ensemble forecast (a 'realization' dim with at least 2 members)",
    "fluid": "a fluid truth (dims trajectory, time, ...)",
    "video": "video=True",
    "latlon": "a latitude/longitude grid",
    "box": "a periodic box",
}
SPATIAL = ("spatial mean with WeatherBench 2 cell-area latitude weights (earthsim.data.grid.latitude_weights, "
           "mean 1) on latitude/longitude grids, uniform on periodic boxes")
SAMPLES = "averaged over initial times (and trajectories for fluids)"


@dataclass(frozen=True)
class Context:
    """What the metrics of one variable of one forecast store know before the first piece."""

    shape: tuple[int, int, int, int]  # initial times, leads, trajectories, levels
    leads: np.ndarray  # lead times as numbers: hours (weather) or solver units (fluids)
    grid: Grid
    weights: np.ndarray  # flat [H × W] spatial weights summing to 1
    members: int
    vorticity: bool  # the variable is a vorticity (energy spectra from vorticity)
    data_range: float | None = None  # video scores: the value range R of SSIM and PSNR
    skip_missing: bool = False  # samples with NaN (marked NaN on both sides) are left out of every mean


class Piece:
    """A piece of a forecast block and its truth, in float64, and the per-sample quantities metrics share.

    ``forecast`` ``[s, L, R, M, P]`` (initial times, leads, trajectories, members, and levels × points
    flattened as ``[..., K, P]``: shape ``[s, L, R, M, K, P]``), ``truth`` ``[s, L, R, K, P]``,
    ``climatology`` like the truth or None; ``where``: the slices of initial times and leads it fills
    in per-sample arrays ``[I, L, R, K]``.
    """

    def __init__(self, forecast: np.ndarray, truth: np.ndarray, climatology: np.ndarray | None,
                 where: tuple[slice, slice], context: Context):
        self.forecast, self.truth, self.climatology = forecast, truth, climatology
        self.where, self.context = where, context
        self.weights = context.weights

    @cached_property
    def valid(self) -> np.ndarray:
        """Samples ``[s, L, R, K]`` whose forecast and truth hold no NaN."""
        return ~(np.isnan(self.forecast).any(axis=(3, 5)) | np.isnan(self.truth).any(axis=-1))

    @cached_property
    def mean(self) -> np.ndarray:
        """The ensemble mean (or only) forecast ``[s, L, R, K, P]``."""
        return self.forecast.mean(axis=3) if self.forecast.shape[3] > 1 else self.forecast[:, :, :, 0]

    @cached_property
    def error(self) -> np.ndarray:
        return self.mean - self.truth

    @cached_property
    def squared_error(self) -> np.ndarray:
        """Spatial mean of the squared error per sample ``[s, L, R, K]``."""
        return (self.error * self.error) @ self.weights

    @cached_property
    def ensemble_variance(self) -> np.ndarray:
        """Spatial mean of the unbiased (M - 1) ensemble variance per sample ``[s, L, R, K]``."""
        return self.forecast.var(axis=3, ddof=1) @ self.weights

    @cached_property
    def correlation(self) -> np.ndarray:
        """Uncentred correlation of forecast and truth over the domain per sample."""
        return formulas.uncentred_correlation(self.mean, self.truth, self.weights)

    def fields(self, values: np.ndarray) -> np.ndarray:
        """``[..., K, P]`` values as ``[..., K, H, W]`` fields."""
        return values.reshape(*values.shape[:-1], *self.context.grid.shape)


class Metric(abc.ABC):
    """One score of one variable of one forecast store.

    ``outputs`` maps each scorecard variable the metric writes to the dims after ``variable``
    (default: its ``name`` along the lead); :meth:`finish` returns their values with levels first
    (``[K, L, ...]``); :meth:`coords` gives the coordinates of any other dims.
    """

    name: ClassVar[str]
    convention: ClassVar[str]
    needs: ClassVar[str | None] = None
    outputs: ClassVar[dict[str, tuple[str, ...]] | None] = None
    headline: ClassVar[bool] = True  # shown in the Markdown scorecard and the score plots
    lead_units: ClassVar[bool] = False  # its values are lead times (their units are the lead's)
    missing_text: ClassVar[str] = "—"  # how the Markdown scorecard shows a NaN value
    infinite_text: ClassVar[str] = "—"  # how it shows ±inf (a lead time beyond those scored)

    def __init__(self, context: Context):
        self.context = context

    @classmethod
    def output_dims(cls) -> dict[str, tuple[str, ...]]:
        return cls.outputs or {cls.name: (LEAD_DIM,)}

    @classmethod
    def conventions(cls) -> dict[str, str]:
        """The convention text of each output."""
        return {key: cls.convention for key in cls.output_dims()}

    @abc.abstractmethod
    def accumulate(self, piece: Piece) -> None:
        """Take in one piece."""

    @abc.abstractmethod
    def finish(self) -> dict[str, np.ndarray]:
        """The values of each output, levels first: ``[K, L, ...]`` (or ``[K, ...]`` for outputs without lead)."""

    def coords(self) -> dict[str, list]:
        return {}


class PerSampleMean(Metric):
    """A metric kept per sample ``[I, L, R, K]`` (initial time, lead, trajectory, level) and averaged over initial
    times and trajectories (its square root after the mean with ``root``); subclasses give :meth:`values` of a
    piece."""

    root: ClassVar[bool] = False

    def __init__(self, context: Context):
        super().__init__(context)
        self.samples = np.full(context.shape, np.nan)

    @abc.abstractmethod
    def values(self, piece: Piece) -> np.ndarray:
        """Per-sample values ``[s, L, R, K]`` of a piece."""

    def accumulate(self, piece: Piece) -> None:
        self.samples[piece.where] = self.values(piece)

    def finish(self) -> dict[str, np.ndarray]:
        mean = self.sample_mean(self.samples)
        return {self.name: levels_first(np.sqrt(mean) if self.root else mean)}

    def sample_mean(self, samples: np.ndarray) -> np.ndarray:
        """``[I, L, R, K]`` averaged over initial times and trajectories: ``[L, K]`` (over the samples that have a
        value when the context skips missing ones)."""
        return nan_mean(samples) if self.context.skip_missing else samples.mean(axis=(0, 2))


def nan_mean(samples: np.ndarray) -> np.ndarray:
    """``[I, L, R, K]`` averaged over initial times and trajectories, NaN samples left out (NaN where none is left)."""
    finite = np.isfinite(samples)
    number = finite.sum(axis=(0, 2))
    total = np.where(finite, samples, 0.0).sum(axis=(0, 2))
    return np.where(number > 0, total / np.maximum(number, 1), np.nan)


class SpectrumSums:
    """Spectra summed per lead over the valid samples of each level, and how many were summed."""

    def __init__(self, leads: int):
        self.leads, self.sums, self.counts = leads, {}, None

    def add(self, key: str, piece: Piece, spectra: np.ndarray) -> None:
        """``spectra`` ``[s, L, R, K, ...]`` of one piece; samples with NaN are left out."""
        valid = piece.valid
        weight = valid.reshape(valid.shape + (1,) * (spectra.ndim - valid.ndim))
        total = np.where(weight, spectra, 0.0).sum(axis=(0, 2))
        if key not in self.sums:
            self.sums[key] = np.zeros((self.leads,) + total.shape[1:])
        if self.counts is None:
            self.counts = np.zeros((self.leads, valid.shape[3]))
        self.sums[key][piece.where[1]] += total
        if key == next(iter(self.sums)):  # every key sums the same samples: count them once
            self.counts[piece.where[1]] += valid.sum(axis=(0, 2))

    def mean(self, key: str) -> np.ndarray:
        """``[L, K, ...]``: the sums divided by the samples summed."""
        counts = self.counts.reshape(self.counts.shape + (1,) * (self.sums[key].ndim - 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.sums[key] / counts


def levels_first(values: np.ndarray) -> np.ndarray:
    """``[L, K, ...]`` as ``[K, L, ...]``."""
    return np.moveaxis(values, 1, 0)


METRICS: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric selectable by its ``name`` (``earthsim score --metrics NAME``)."""
    if cls.name in METRICS:
        raise ValueError(f"metric {cls.name!r} is already registered")
    METRICS[cls.name] = cls
    return cls


def conventions() -> dict[str, str]:
    """Every scorecard variable's convention text, by output name."""
    out = {}
    for cls in METRICS.values():
        out.update(cls.conventions())
    return out


from earthsim.score.metrics import weather, ensemble, fluid, video  # noqa: E402,F401,I001  (register, in this order)
