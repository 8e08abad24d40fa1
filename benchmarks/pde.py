"""Numerical PDE solvers, earthsim against torch-cfd (PyPI 0.2.6) side by side in one process: steps per second and
the relative difference of the two solutions from the same start.

Both solve Kolmogorov flow at Re = 1000 on [0, 2π)² (viscosity 1e-3, drag 0.1, forcing (sin 4y, 0)) at the same
time step, dt = stable_time_step(n, 7.0, 0.5) (Courant number 0.5 at speed 7), for every grid size, batch and
precision asked:

- ``spectral``: earthsim's pseudo-spectral vorticity solver (:class:`earthsim.sim.navier_stokes.NavierStokes2D`)
  against ``torch_cfd.spectral.NavierStokes2DSpectral`` with its ``RK4CrankNicolsonStepper``, the same
  Crank–Nicolson/RK4 IMEX scheme, forced by its ``KolmogorovForcing`` in vorticity form (its cheaper form).
- ``fvm``: earthsim's staggered finite-volume velocity solver
  (:class:`earthsim.sim.finite_volume.FiniteVolumeNavierStokes`, van Leer convection, forward Euler, FFT
  projection, implicit diffusion) against ``torch_cfd.fvm.NavierStokes2DFVMProjection`` (van Leer convection,
  explicit diffusion, pressure projection) stepped by ``RKStepper`` with ``--fvm-method`` (default
  ``forward_euler``: one convection evaluation and one projection per step, as earthsim's; torch-cfd's own
  default ``heun_rk2`` does two, its example notebook's ``classic_rk4`` four). torch-cfd's projection is built
  with the case's precision (by default it solves in float32 whatever the field's precision).

The start is a band-limited random vorticity field (earthsim's ``random_vorticity``, kept to the 2/3-rule band);
the finite-volume solvers start from its exact face averages (``face_averages``). torch-cfd holds fields as
``[x, y]``, earthsim as ``[y, x]``: fields are transposed on the way in and out. torch-cfd builds its grids and
coefficients and evaluates its forcing in torch's default dtype, so each case runs with the default dtype set to
its precision (earthsim takes its dtype explicitly).

Timing, under ``torch.no_grad()`` with ``torch.set_num_threads(--threads)`` for both: warm-up steps, then
``--rounds`` rounds that time earthsim and then torch-cfd, each for about ``--seconds`` of steps; steps/s is the
median over rounds, and the ratio earthsim/torch-cfd the median of the per-round ratios (each round's pair ran
back to back, so a busy machine slows both). The difference is ‖a − b‖/‖b‖ (L2 over the batch) of vorticity
(spectral) or velocity (fvm) after ``--diff-steps`` steps from the same start; for the spectral solvers also
with torch-cfd's 2/3 filter replaced by earthsim's (torch-cfd's keeps one more row of negative k_y at 128²), and
for the finite-volume solvers the largest discrete divergence each leaves.

The second part (``--parts learned``, a table of its own under ``"learned"`` in the JSON) answers "how long does
each take to simulate one time unit": inference seconds per simulated time unit of the learned models —
learned-interpolation, tsm, fno and spacetime-fno, each built untrained (the weights do not change the speed) by
``earthsim.models.build_model`` from its CPU experiment preset's model params on the data spec of the preset's
dataset at 32² (frame interval = the dataset's step × the preset's stride; identity statistics) — rolled out by
``earthsim.models.rollout`` in eval mode, batch 1, float32, for the frames (whole calls of the model) covering
``--duration`` time units; and of the finite-volume solver (van Leer; float64 and float32; 32², 64², 128² and every
matching resolution) and the pseudo-spectral solver (float64; 64², 128²) at their CFL step. Each case: one untimed
warm-up run, then ``--repeats`` rounds that run every case once in turn (a busy machine slows all alike); seconds
are the median over rounds, a ratio the median of the per-round ratios; all under ``torch.no_grad()`` with the
same threads. Each learned model's ratio to the finite-volume solver at the resolution that matches its accuracy
(``--match NAME=RESOLUTION``, from README's TSM table; default 2× the model's grid) is printed beside it.

    python benchmarks/pde.py [--quick] [--parts torch-cfd learned] [--sizes 64 128 256] [--batches 1 8]
        [--threads 1] [--match tsm=64 ...] [--duration 1] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import statistics
import sys
import time

import torch

from report import add_json_argument, publish

VISCOSITY, DRAG, FORCING_WAVENUMBER, FORCING_AMPLITUDE = 1e-3, 0.1, 4, 1.0
MAX_VELOCITY, CFL_SAFETY, PEAK_WAVENUMBER = 7.0, 0.5, 4.0
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SOLVERS = ("spectral", "fvm")
TARGET_RATIO = 1.0


def _import_torch_cfd():
    """torch-cfd's modules, or exit 2 with one line saying it is missing."""
    try:
        from torch_cfd import boundaries, forcings, fvm, grids, spectral
    except ImportError as error:
        print(f"benchmarks/pde.py: torch-cfd is not importable ({error}); pip install torch-cfd==0.2.6",
              file=sys.stderr)
        raise SystemExit(2)
    return boundaries, forcings, fvm, grids, spectral


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` for a case: torch-cfd makes its tensors in it, even while stepping."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def time_step(n: int) -> float:
    """The one dt both libraries step with on an n² grid: Courant number 0.5 at speed 7."""
    from earthsim.sim.navier_stokes import stable_time_step

    return stable_time_step(n, MAX_VELOCITY, CFL_SAFETY)


def _earthsim_spectral(n: int, dtype: torch.dtype):
    from earthsim.sim.navier_stokes import NavierStokes2D, kolmogorov_forcing

    return NavierStokes2D(n, VISCOSITY, time_step(n), drag=DRAG,
                          forcing=kolmogorov_forcing(n, FORCING_WAVENUMBER, FORCING_AMPLITUDE), dtype=dtype)


def start_vorticity(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """Band-limited random vorticity ``[batch, n, n]`` (float64, ``[y, x]``): modes outside the 2/3 band removed."""
    from earthsim.sim.navier_stokes import random_vorticity

    solver = _earthsim_spectral(n, torch.float64)
    return solver.to_physical(solver.to_spectral(random_vorticity(range(batch), n, seed, PEAK_WAVENUMBER,
                                                                   MAX_VELOCITY)))


class Pair:
    """One case for both libraries: a step and a start state each, and how to read a state as an earthsim field."""

    def __init__(self, earthsim_step, earthsim_state, reference_step, reference_state, earthsim_field,
                 reference_field):
        self.steps = {"earthsim": earthsim_step, "torch-cfd": reference_step}
        self.states = {"earthsim": earthsim_state, "torch-cfd": reference_state}
        self.fields = {"earthsim": earthsim_field, "torch-cfd": reference_field}

    def run(self, which: str, steps: int):
        state = self.states[which]
        for _ in range(steps):
            state = self.steps[which](state)
        self.states[which] = state
        return state


def spectral_pair(n: int, batch: int, dtype: torch.dtype, same_filter: bool = False) -> Pair:
    """earthsim's and torch-cfd's pseudo-spectral solvers from the same start; ``same_filter`` gives torch-cfd
    earthsim's 2/3 mask (call under :func:`default_dtype`)."""
    _, forcings, _, grids, spectral = _import_torch_cfd()
    dt = time_step(n)
    ours = _earthsim_spectral(n, dtype)
    grid = grids.Grid((n, n), domain=((0, 2 * math.pi), (0, 2 * math.pi)))
    forcing = forcings.KolmogorovForcing(grid=grid, diam=2 * math.pi, wave_number=FORCING_WAVENUMBER,
                                         scale=FORCING_AMPLITUDE, vorticity=True, offsets=((0, 0), (0, 0)))
    theirs = spectral.NavierStokes2DSpectral(viscosity=VISCOSITY, grid=grid, drag=DRAG, smooth=True,
                                             forcing_fn=forcing, step_fn=spectral.RK4CrankNicolsonStepper())
    if same_filter:
        theirs.filter.copy_(ours.mask)
    start = start_vorticity(n, batch).to(dtype)
    return Pair(ours.step, ours.to_spectral(start), lambda hat: theirs.step(hat, dt)[0],
                torch.fft.rfft2(start.transpose(-1, -2)), ours.to_physical,
                lambda hat: torch.fft.irfft2(hat, s=(n, n)).transpose(-1, -2))


def fvm_pair(n: int, batch: int, dtype: torch.dtype, method: str = "forward_euler") -> Pair:
    """earthsim's and torch-cfd's finite-volume solvers from the same divergence-free start (call under
    :func:`default_dtype`)."""
    from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, face_averages

    boundaries, forcings, fvm, grids, _ = _import_torch_cfd()
    dt = time_step(n)
    ours = FiniteVolumeNavierStokes(n, VISCOSITY, dt, drag=DRAG, forcing_wavenumber=FORCING_WAVENUMBER,
                                    forcing_amplitude=FORCING_AMPLITUDE, interpolation="van-leer", dtype=dtype)
    grid = grids.Grid((n, n), domain=((0, 2 * math.pi), (0, 2 * math.pi)))
    bcs = (boundaries.periodic_boundary_conditions(ndim=2),) * 2
    offsets = ((1.0, 0.5), (0.5, 1.0))  # u on east faces, v on north faces, as earthsim's (and jax-cfd's)
    forcing = forcings.KolmogorovForcing(grid=grid, diam=2 * math.pi, wave_number=FORCING_WAVENUMBER,
                                         scale=FORCING_AMPLITUDE, offsets=offsets)
    projection = fvm.PressureProjection(grid=grid, bc=boundaries.get_pressure_bc_from_velocity_bc(bcs=bcs),
                                        dtype=dtype)
    theirs = fvm.NavierStokes2DFVMProjection(viscosity=VISCOSITY, grid=grid, bcs=bcs, drag=DRAG, forcing=forcing,
                                             pressure_proj=projection,
                                             step_fn=fvm.RKStepper.from_method(method, dtype=dtype))

    def wrap(velocity):
        return grids.GridVariableVector(tuple(
            grids.GridVariable(velocity[:, c].transpose(-1, -2).contiguous(), offsets[c], grid, bcs[c])
            for c in (0, 1)))

    def unwrap(state):
        return torch.stack([state[c].data.transpose(-1, -2) for c in (0, 1)], dim=1)

    start = face_averages(torch.fft.rfft2(start_vorticity(n, batch), norm="forward"), n, n).to(dtype)
    return Pair(ours.step, start, lambda state: theirs(state, dt)[0], wrap(start), lambda v: v, unwrap)


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """‖ours − theirs‖/‖theirs‖ over the whole batch."""
    return float((ours - theirs).norm() / theirs.norm())


def differences(solver: str, n: int, batch: int, dtype: torch.dtype, steps: int, method: str) -> dict:
    """The relative difference of the two solutions after ``steps`` steps from the same start (and, for the
    spectral solvers, with torch-cfd given earthsim's 2/3 filter; for the finite-volume ones, the divergence)."""
    from earthsim.sim.finite_volume import divergence

    pairs = {"": spectral_pair(n, batch, dtype) if solver == "spectral" else fvm_pair(n, batch, dtype, method)}
    if solver == "spectral":
        pairs["_same_filter"] = spectral_pair(n, batch, dtype, same_filter=True)
    out = {}
    for suffix, pair in pairs.items():
        ours, theirs = (pair.fields[w](pair.run(w, steps)) for w in ("earthsim", "torch-cfd"))
        if not (torch.isfinite(ours).all() and torch.isfinite(theirs).all()):
            raise SystemExit(f"benchmarks/pde.py: {solver} {n}² batch {batch} {dtype}: a solution is not finite "
                             f"after {steps} steps")
        out[f"relative_difference{suffix}"] = relative_difference(ours, theirs)
        if solver == "fvm":
            out["max_divergence"] = {"earthsim": float(divergence(ours).abs().max()),
                                     "torch-cfd": float(divergence(theirs).abs().max())}
    return out


def _seconds(pair: Pair, which: str, steps: int) -> float:
    start = time.perf_counter()
    pair.run(which, steps)
    return time.perf_counter() - start


def time_pair(pair: Pair, rounds: int, seconds: float, warmup: int) -> dict:
    """Steps/s of each library (median over rounds) and the median per-round ratio earthsim/torch-cfd."""
    names = ("earthsim", "torch-cfd")
    steps = {}
    for which in names:
        pair.run(which, warmup)
        per_step = _seconds(pair, which, 2) / 2
        steps[which] = max(1, round(seconds / per_step))
    rates = {which: [] for which in names}
    for _ in range(rounds):
        for which in names:
            rates[which].append(steps[which] / _seconds(pair, which, steps[which]))
    ratios = [a / b for a, b in zip(rates["earthsim"], rates["torch-cfd"])]
    return {"steps_per_second": {which: statistics.median(rates[which]) for which in names},
            "steps_per_round": steps, "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}


def run_case(solver: str, n: int, batch: int, dtype_name: str, rounds: int, seconds: float, warmup: int,
             diff_steps: int, method: str) -> dict:
    """One row of the table: the solution difference, then the timing, each from a fresh pair of solvers."""
    dtype = DTYPES[dtype_name]
    with default_dtype(dtype), torch.no_grad():
        row = {"solver": solver, "dtype": dtype_name, "resolution": n, "batch": batch, "dt": time_step(n),
               **differences(solver, n, batch, dtype, diff_steps, method)}
        pair = spectral_pair(n, batch, dtype) if solver == "spectral" else fvm_pair(n, batch, dtype, method)
        row.update(time_pair(pair, rounds, seconds, warmup))
    return row


def _format(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def markdown(figures: dict) -> str:
    """The table, the lowest ratio against the target, and the finite-volume notes, from the figures alone."""
    rows = figures["rows"]
    steps = figures["diff_steps"]
    lines = [f"PDE solvers, Kolmogorov flow Re = 1000, same dt (Courant 0.5 at speed 7), {figures['threads']} "
             f"thread(s); torch-cfd {figures['torch_cfd_version']} (finite volume stepped by "
             f"{figures['fvm_method']}); ratio = earthsim/torch-cfd steps/s, median of {figures['rounds']} paired "
             f"rounds (range in brackets); load average {figures['load_average']['start']:.1f} at the start, "
             f"{figures['load_average']['end']:.1f} at the end", "",
             f"| solver | dtype | n | batch | earthsim steps/s | torch-cfd steps/s | ratio | rel. diff after {steps} "
             "steps | same, torch-cfd with earthsim's 2/3 filter |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        rate = r["steps_per_second"]
        same = f"{r['relative_difference_same_filter']:.1e}" if "relative_difference_same_filter" in r else "—"
        lines.append(f"| {r['solver']} | {r['dtype']} | {r['resolution']} | {r['batch']} | "
                     f"{_format(rate['earthsim'])} | {_format(rate['torch-cfd'])} | **{r['ratio']:.2f}** "
                     f"({r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f}) | {r['relative_difference']:.1e} | "
                     f"{same} |")
    worst = min(rows, key=lambda r: r["ratio"])
    lines += ["", f"Lowest ratio {worst['ratio']:.2f} ({worst['solver']} {worst['dtype']} {worst['resolution']}² "
                  f"batch {worst['batch']}); target ≥ {TARGET_RATIO:g} at every size and batch: "
                  f"{'met' if figures['target_met'] else '**missed**'}."]
    fvm_rows = [r for r in rows if r["solver"] == "fvm"]
    if fvm_rows:
        lines.append("Finite volume: the schemes differ (earthsim: implicit diffusion after the projection; "
                     "torch-cfd: explicit diffusion), so the difference is the O(dt) scheme difference, not "
                     "round-off. Largest discrete divergence left after the steps, earthsim / torch-cfd: " + "; ".join(
                         f"{d} {max(r['max_divergence']['earthsim'] for r in fvm_rows if r['dtype'] == d):.1e} / "
                         f"{max(r['max_divergence']['torch-cfd'] for r in fvm_rows if r['dtype'] == d):.1e}"
                         for d in dict.fromkeys(r["dtype"] for r in fvm_rows)) + ".")
    return "\n".join(lines)



# -- second part: inference seconds per simulated time unit, learned models beside the numerical solvers ---------------

LEARNED_PRESETS = {  # family: its CPU experiment preset (model params, frames in and out, dataset and stride)
    "learned-interpolation": "learned-interpolation-kolmogorov-32",
    "tsm": "tsm-kolmogorov-32",
    "fno": "fno-kolmogorov-fv-32",  # FNO on the learned solvers' data: vorticity at 32², Δt = 10 CFL steps
    "spacetime-fno": "kolmogorov-spacetime-fno",  # 10 frames 0.1 apart in, 10 out (fno-paper-spacetime-fno: 0.2)
}
FALLBACK_PRESETS = {"fno": "kolmogorov-fno", "spacetime-fno": "fno-paper-spacetime-fno"}  # where the first is absent
PARTS = ("torch-cfd", "learned")
UNTRAINED_STENCIL_SCALE = 0.01  # on the untrained learned solvers' last convolution (see learned_model)
LEARNED_GRID = 32  # every learned model's grid (its preset's data: 32², but kolmogorov-fno's is 64²)


def learned_preset(family: str, chosen: dict[str, str]) -> str:
    """The preset a family is built from: ``--preset`` if given, else its CPU preset (or the fallback)."""
    from earthsim.train.config import experiment_names

    if family in chosen:
        return chosen[family]
    preset = LEARNED_PRESETS[family]
    return preset if preset in experiment_names() else FALLBACK_PRESETS.get(family, preset)


def learned_spec(preset: str, grid: int | None = None):
    """The DataSpec a preset's model is trained on, made from the catalog alone (no store needed): its dataset's
    variables (or the preset's), box and physics, ``grid``² (default 32²), frame interval = the dataset's
    step × the preset's stride, identity statistics (weights and statistics do not change the speed)."""
    from earthsim import catalog
    from earthsim.data.grid import Grid
    from earthsim.models import DataSpec, Statistics
    from earthsim.train.config import load_experiment

    cfg = load_experiment(preset)
    entry = catalog.get_entry(cfg.data.dataset)
    n = grid or LEARNED_GRID
    inputs = tuple(cfg.data.variables or entry.variable_names)
    source = dict(entry.source.params) if entry.source else {}
    physics = {"flow": source.get("flow", "kolmogorov"), "viscosity": source.get("viscosity", VISCOSITY),
               "drag": source.get("drag", DRAG), "forcing_wavenumber": source.get("forcing_wavenumber", 0),
               "forcing_amplitude": source.get("forcing_amplitude", 0.0), "domain_length": entry.grid.length,
               "cfl_velocity": source.get("max_velocity", MAX_VELOCITY),
               "cfl_safety": source.get("cfl_safety", CFL_SAFETY), "staggered": bool(source.get("staggered"))}
    outputs = tuple(cfg.data.output_variables or inputs)
    c = len(inputs)
    statistics = Statistics(mean=(0.0,) * c, std=(1.0,) * c, diff_std=(1.0,) * c, static_mean=(), static_std=())
    spec = DataSpec(inputs=inputs, outputs=outputs, grid=Grid(x=n, y=n, length=entry.grid.length),
                    time_step=entry.time_step * cfg.data.stride, time_units=entry.time.units, physics=physics,
                    statistics=statistics)
    params = dict(cfg.model.params)
    params.update(t_in=cfg.data.t_in, t_out=cfg.data.t_out)
    return cfg, spec, params


def learned_model(family: str, preset: str, grid: int | None = None):
    """An untrained model of ``family`` (seeded) built from ``preset``'s params on its data spec, float32, eval mode;
    a learned solver's last convolution scaled by ``UNTRAINED_STENCIL_SCALE`` (random stencils far from any
    interpolation can make the untrained flow blow up within a time unit)."""
    from earthsim.models import MODELS, build_model

    cfg, spec, params = learned_spec(preset, grid)
    if cfg.model.name != family:
        raise SystemExit(f"benchmarks/pde.py: preset {preset!r} builds {cfg.model.name!r}, not {family!r}")
    fields = {f.name for f in dataclasses.fields(MODELS[family].config_cls)}
    torch.manual_seed(0)
    model = build_model(family, {k: v for k, v in params.items() if k in fields}, spec).float().eval()
    if hasattr(model, "tower"):  # learned solvers: stencils near linear interpolation, as training leaves them, so
        with torch.no_grad():    # the untrained flow stays finite (the same arithmetic: no weight is zero)
            model.tower[-1].weight.mul_(UNTRAINED_STENCIL_SCALE)
            model.tower[-1].bias.mul_(UNTRAINED_STENCIL_SCALE)
    return model, spec


def flow_history(n: int, frames: int, interval: float) -> torch.Tensor:
    """``frames`` frames ``[1, frames, 3, n, n]`` (u, v, vorticity) ``interval`` apart of Kolmogorov flow from the
    band-limited random start, stepped by the finite-volume solver (the models' inputs: a real flow, not noise)."""
    from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, curl, face_averages
    from earthsim.sim.navier_stokes import steps_per_interval

    steps, dt = steps_per_interval(interval, time_step(n))
    solver = FiniteVolumeNavierStokes(n, VISCOSITY, dt, drag=DRAG, forcing_wavenumber=FORCING_WAVENUMBER,
                                      forcing_amplitude=FORCING_AMPLITUDE, interpolation="van-leer")
    state = face_averages(torch.fft.rfft2(start_vorticity(n, 1), norm="forward"), n, n)
    out = []
    with torch.no_grad():
        for _ in range(frames):
            out.append(torch.cat([state, curl(state)[:, None]], dim=1))
            for _ in range(steps):
                state = solver.step(state)
    return torch.stack(out, dim=1)


class Case:
    """One row of the second table: ``run()`` simulates ``count`` frames or steps ``interval`` apart; ``info`` holds
    the row's description and ``finite()`` says whether the last run's result is finite."""

    def __init__(self, run, count: int, interval: float, finite, **info):
        self.run, self.count, self.interval, self.finite, self.info = run, count, interval, finite, info
        self.seconds: list[float] = []

    def time(self) -> None:
        start = time.perf_counter()
        self.run()
        self.seconds.append(time.perf_counter() - start)

    def row(self) -> dict:
        simulated = self.count * self.interval
        return {**self.info, "interval": self.interval, "count": self.count, "simulated_time": simulated,
                "seconds": self.seconds, "seconds_per_time_unit": statistics.median(self.seconds) / simulated,
                "seconds_per_time_unit_range": [min(self.seconds) / simulated, max(self.seconds) / simulated],
                "finite": self.finite()}


def learned_case(family: str, preset: str, duration: float, grid: int | None = None) -> Case:
    """``rollout(model, x, frames)`` (batch 1, float32, no grad, eval mode) for the frames covering ``duration``
    (rounded up to whole calls of the model), from frames of Kolmogorov flow."""
    from earthsim.models import rollout

    model, spec = learned_model(family, preset, grid)
    n, interval = spec.shape[0], spec.time_step
    calls = max(1, math.ceil(duration / (interval * model.t_out) - 1e-9))
    frames = calls * model.t_out
    history = flow_history(n, model.t_in, interval)
    channels = {"u": history[:, :, 0], "v": history[:, :, 1], "vorticity": history[:, :, 2]}
    x = torch.stack([channels[name] for name in spec.inputs], dim=2).float()
    out = {}

    def run():
        with torch.no_grad():
            out["y"] = rollout(model, x, frames)

    return Case(run, frames, interval, lambda: bool(torch.isfinite(out["y"]).all()), kind="learned", name=family,
                dtype="float32", resolution=n, preset=preset, t_in=model.t_in, frames_per_call=model.t_out,
                time_units=spec.time_units, flow=spec.physics["flow"],
                parameters=sum(p.numel() for p in model.parameters()))


def solver_case(solver: str, n: int, dtype_name: str, duration: float) -> Case:
    """The finite-volume (van Leer) or pseudo-spectral solver at its CFL step for the steps covering ``duration``,
    batch 1, from the band-limited random start (the same start every run)."""
    from earthsim.sim.finite_volume import FiniteVolumeNavierStokes, face_averages

    dtype, dt = DTYPES[dtype_name], time_step(n)
    steps = max(1, math.ceil(duration / dt - 1e-9))
    if solver == "finite-volume":
        model = FiniteVolumeNavierStokes(n, VISCOSITY, dt, drag=DRAG, forcing_wavenumber=FORCING_WAVENUMBER,
                                         forcing_amplitude=FORCING_AMPLITUDE, interpolation="van-leer", dtype=dtype)
        start = face_averages(torch.fft.rfft2(start_vorticity(n, 1), norm="forward"), n, n).to(dtype)
    else:
        model = _earthsim_spectral(n, dtype)
        start = model.to_spectral(start_vorticity(n, 1).to(dtype))
    out = {}

    def run():
        state = start
        with torch.no_grad():
            for _ in range(steps):
                state = model.step(state)
        out["state"] = state

    return Case(run, steps, dt, lambda: bool(torch.isfinite(out["state"]).all()), kind="solver", name=solver,
                dtype=dtype_name, resolution=n)


def parse_matches(items: list[str], families: list[str]) -> dict[str, int]:
    """``name=RESOLUTION`` pairs of ``--match``."""
    matches = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in families or not value.isdigit() or int(value) < 16 or int(value) % 2:
            raise SystemExit(f"benchmarks/pde.py: --match {item!r}: expected NAME=RESOLUTION with NAME one of "
                             f"{families} and an even RESOLUTION ≥ 16")
        matches[name] = int(value)
    return matches


def run_learned(families: list[str], presets: dict[str, str], matches: dict[str, int], fv_sizes: list[int],
                spectral_sizes: list[int], duration: float, repeats: int, grid: int | None) -> dict:
    """The second part's figures: every learned model and solver case (the finite-volume solver also at every
    matching resolution) warmed up by one run, then ``repeats`` rounds that run every case once in turn (so a busy
    machine slows all alike); each learned model's ratio to the finite-volume solver at its matching resolution is
    the median of the per-round ratios."""
    started, load = time.perf_counter(), os.getloadavg()[0]
    cases = [learned_case(family, learned_preset(family, presets), duration, grid) for family in families]
    for case in cases:
        case.info["match"] = {"resolution": matches.get(case.info["name"], 2 * case.info["resolution"]),
                              "from": "--match" if case.info["name"] in matches else "default: 2× the model's grid"}
    sizes = sorted(set(fv_sizes) | {c.info["match"]["resolution"] for c in cases})
    cases += [solver_case("finite-volume", n, d, duration) for d in ("float64", "float32") for n in sizes]
    cases += [solver_case("pseudo-spectral", n, "float64", duration) for n in sorted(set(spectral_sizes))]
    for case in cases:
        case.run()  # warm-up
    for _ in range(repeats):
        for case in cases:
            case.time()
    rows = [case.row() for case in cases]
    for row in rows:
        print(f"{row['name']} {row['dtype']} {row['resolution']}²: {row['seconds_per_time_unit']:.3g} s per time unit",
              flush=True)
    fv = {(r["resolution"], r["dtype"]): r for r in rows if r["name"] == "finite-volume"}
    for row in rows:
        if row["kind"] == "learned":
            match = row["match"]
            per_round = {d: [(s / row["simulated_time"]) / (f / fv[(match["resolution"], d)]["simulated_time"])
                             for s, f in zip(row["seconds"], fv[(match["resolution"], d)]["seconds"])]
                         for d in ("float32", "float64")}
            match["ratio"] = {d: statistics.median(v) for d, v in per_round.items()}
            match["ratio_range"] = {d: [min(v), max(v)] for d, v in per_round.items()}
    return {"duration": duration, "repeats": repeats, "warmup_runs": 1, "batch": 1, "rows": rows,
            "wall_seconds": time.perf_counter() - started,
            "load_average": {"start": load, "end": os.getloadavg()[0]}}


def learned_markdown(figures: dict, threads: int) -> str:
    """The second table: seconds per simulated time unit, and each learned model against the finite-volume solver
    at its matching resolution."""
    part = figures["learned"]
    load = part["load_average"]
    lines = [f"Inference seconds per simulated time unit, batch 1, {threads} thread(s), no grad; median of "
             f"{part['repeats']} rounds, each running every case once for ≥ {part['duration']:g} time units, after "
             "one warm-up run (range in brackets; ratios: median of the per-round ratios); load average "
             f"{load['start']:.1f} at the start, {load['end']:.1f} at the end", "",
             "| model | preset / scheme | dtype | n | Δt per frame or step | frames or steps (time units) | "
             "s per time unit | ÷ finite volume at matching n: float32 / float64 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in part["rows"]:
        span = f"{r['seconds_per_time_unit_range'][0]:.3g}–{r['seconds_per_time_unit_range'][1]:.3g}"
        if r["kind"] == "learned":
            m = r["match"]
            scheme = f"{r['preset']} ({r['parameters']:,} parameters, untrained)"
            ratio = f"n = {m['resolution']}: **{m['ratio']['float32']:.3g}** / **{m['ratio']['float64']:.3g}**"
            unit = f"{r['count']} frame{'s' if r['count'] != 1 else ''} ({r['simulated_time']:.3g})"
        else:
            scheme = "van Leer, CFL step" if r["name"] == "finite-volume" else "RK4/Crank–Nicolson, CFL step"
            ratio = "—"
            unit = f"{r['count']} step{'s' if r['count'] != 1 else ''} ({r['simulated_time']:.3g})"
        lines.append(f"| {r['name']} | {scheme} | {r['dtype']} | {r['resolution']} | {r['interval']:.5g} | {unit} | "
                     f"{r['seconds_per_time_unit']:.3g} ({span}) | {ratio} |")
    learned = [r for r in part["rows"] if r["kind"] == "learned"]
    given = [r["name"] for r in learned if r["match"]["from"] == "--match"]
    lines += ["", "Learned models are untrained (built from their presets' model params, seeded; the weights do not "
                  "change the speed; learned-interpolation's and tsm's last convolution is scaled by "
                  f"{UNTRAINED_STENCIL_SCALE:g} so that their random stencils stay near linear interpolation and the "
                  "flow finite) and run in float32 through `earthsim.models.rollout`; ratio = the model's seconds per "
                  "time unit ÷ the finite-volume solver's at the resolution that matches its accuracy (< 1: the model "
                  "is faster). Matching resolutions come from README's TSM table: " + (
                      ", ".join(f"{r['name']} {r['match']['resolution']}" for r in learned if r['name'] in given)
                      + " (`--match`)" if given else "none given") + "; " + (
                      ", ".join(f"{r['name']} {r['match']['resolution']}" for r in learned if r['name'] not in given)
                      + " by default (2× the model's grid)" if len(given) < len(learned) else "none by default") + ".",
              "Solvers: Kolmogorov flow Re = 1000 at their CFL step stable_time_step(n, 7, 0.5), batch 1; every "
              "model's input is Kolmogorov flow from the finite-volume solver" + "".join(
                  f"; {r['name']}'s preset is trained on the {r['flow']} flow (time in its units)"
                  for r in learned if r["flow"] != "kolmogorov") + "."]
    bad = [f"{r['name']} {r['dtype']} {r['resolution']}" for r in part["rows"] if not r["finite"]]
    if bad:
        lines.append(f"Not finite at the end of the run (the timing still counts the same work): {', '.join(bad)}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64² only, fewer and shorter rounds (under a minute); "
                                                              "the second part shorter and at fewer sizes")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="torch-cfd: the side-by-side solver table; learned: seconds per simulated time unit of "
                             "the learned models and the solvers (default both)")
    parser.add_argument("--sizes", type=int, nargs="+", help="grid sizes n (default 64 128 256; --quick: 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--solvers", nargs="+", choices=SOLVERS, default=list(SOLVERS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both libraries (default 1)")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 7; --quick: 3)")
    parser.add_argument("--seconds", type=float, help="seconds of steps per library per round (default 0.3; "
                                                      "--quick: 0.05)")
    parser.add_argument("--diff-steps", type=int, default=10,
                        help="steps from the same start before the solutions are compared (default 10)")
    parser.add_argument("--fvm-method", default="forward_euler",
                        choices=["forward_euler", "midpoint", "heun_rk2", "classic_rk4"],
                        help="torch-cfd's RKStepper method for its finite-volume solver (default forward_euler: "
                             "one stage, as earthsim's step)")
    learned = parser.add_argument_group("second part (--parts learned)")
    learned.add_argument("--models", nargs="+", choices=list(LEARNED_PRESETS), default=list(LEARNED_PRESETS),
                         help="learned families timed (default all)")
    learned.add_argument("--preset", action="append", default=[], metavar="NAME=PRESET",
                         help="build NAME from experiment PRESET instead of its default (repeatable; defaults: "
                              + ", ".join(f"{k}={v}" for k, v in LEARNED_PRESETS.items()) + ")")
    learned.add_argument("--match", action="append", default=[], metavar="NAME=RESOLUTION",
                         help="the finite-volume resolution whose accuracy learned model NAME matches (README's TSM "
                              "table; repeatable; default 2× the model's grid)")
    learned.add_argument("--duration", type=float,
                         help="simulated time units each timed run covers (default 1; --quick: 0.25)")
    learned.add_argument("--repeats", type=int, help="timed runs per case, after one warm-up run (default 5; "
                                                     "--quick: 3)")
    learned.add_argument("--fv-sizes", type=int, nargs="+",
                         help="finite-volume grid sizes (default 32 64 128; --quick: 32 64), float64 and float32, "
                              "plus every matching resolution")
    learned.add_argument("--spectral-sizes", type=int, nargs="+",
                         help="pseudo-spectral grid sizes, float64 (default 64 128; --quick: 64)")
    learned.add_argument("--learned-grid", type=int,
                         help="grid of every learned model (default 32, the grid of the presets' data)")
    add_json_argument(parser)
    args = parser.parse_args(argv)
    if "torch-cfd" in args.parts:
        _import_torch_cfd()
    import importlib.metadata

    sizes = args.sizes or ([64] if args.quick else [64, 128, 256])
    rounds = args.rounds or (3 if args.quick else 7)
    seconds = args.seconds or (0.05 if args.quick else 0.3)
    warmup = 2 if args.quick else 5
    if min(sizes) < 16 or any(n % 2 for n in sizes) or min(args.batches) < 1 or rounds < 1 or args.diff_steps < 1:
        parser.error("sizes must be even and ≥ 16, batches, --rounds and --diff-steps ≥ 1")
    duration = args.duration or (0.25 if args.quick else 1.0)
    repeats = args.repeats or (3 if args.quick else 5)
    fv_sizes = args.fv_sizes or ([32, 64] if args.quick else [32, 64, 128])
    spectral_sizes = args.spectral_sizes or ([64] if args.quick else [64, 128])
    if not duration > 0 or repeats < 1 or min(fv_sizes + spectral_sizes) < 16 or any(
            n % 2 for n in fv_sizes + spectral_sizes) or (args.learned_grid is not None and args.learned_grid < 16):
        parser.error("--duration must be > 0, --repeats ≥ 1, solver sizes and --learned-grid even and ≥ 16")
    matches = parse_matches(args.match, list(LEARNED_PRESETS))
    presets = {}
    for item in args.preset:
        name, _, preset = item.partition("=")
        if name not in LEARNED_PRESETS or not preset:
            parser.error(f"--preset {item!r}: expected NAME=PRESET with NAME one of {list(LEARNED_PRESETS)}")
        presets[name] = preset
    torch.set_num_threads(args.threads)
    figures = {"benchmark": "pde", "quick": args.quick, "parts": list(args.parts), "threads": args.threads,
               "torch_version": torch.__version__, "machine": platform.machine(),
               "physics": {"viscosity": VISCOSITY, "drag": DRAG, "forcing_wavenumber": FORCING_WAVENUMBER,
                           "forcing_amplitude": FORCING_AMPLITUDE, "max_velocity": MAX_VELOCITY,
                           "cfl_safety": CFL_SAFETY}}
    tables = []
    if "torch-cfd" in args.parts:
        rows = []
        started, load = time.perf_counter(), os.getloadavg()[0]  # the machine may be shared: say how busy it was
        for solver in args.solvers:
            for dtype_name in args.dtypes:
                for n in sizes:
                    for batch in args.batches:
                        row = run_case(solver, n, batch, dtype_name, rounds, seconds, warmup, args.diff_steps,
                                       args.fvm_method)
                        rows.append(row)
                        print(f"{solver} {dtype_name} {n}² batch {batch}: earthsim "
                              f"{row['steps_per_second']['earthsim']:.1f} steps/s, torch-cfd "
                              f"{row['steps_per_second']['torch-cfd']:.1f} → {row['ratio']:.2f}; rel. diff "
                              f"{row['relative_difference']:.1e}", flush=True)
        figures.update({"rounds": rounds, "seconds_per_round": seconds, "warmup_steps": warmup,
                        "diff_steps": args.diff_steps, "fvm_method": args.fvm_method,
                        "torch_cfd_version": importlib.metadata.version("torch-cfd"),
                        "rows": rows, "target_ratio": TARGET_RATIO,
                        "target_met": all(r["ratio"] >= TARGET_RATIO for r in rows),
                        "wall_seconds": time.perf_counter() - started,
                        "load_average": {"start": load, "end": os.getloadavg()[0]}})
        tables.append(markdown(figures))
    if "learned" in args.parts:
        figures["learned"] = run_learned(args.models, presets, matches, fv_sizes, spectral_sizes, duration, repeats,
                                         args.learned_grid)
        tables.append(learned_markdown(figures, args.threads))
    publish("\n\n".join(tables), figures, args.json)


if __name__ == "__main__":
    main()
