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

    python benchmarks/pde.py [--quick] [--sizes 64 128 256] [--batches 1 8] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64² only, fewer and shorter rounds (under a minute)")
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
    add_json_argument(parser)
    args = parser.parse_args(argv)
    _import_torch_cfd()
    import importlib.metadata

    sizes = args.sizes or ([64] if args.quick else [64, 128, 256])
    rounds = args.rounds or (3 if args.quick else 7)
    seconds = args.seconds or (0.05 if args.quick else 0.3)
    warmup = 2 if args.quick else 5
    if min(sizes) < 16 or any(n % 2 for n in sizes) or min(args.batches) < 1 or rounds < 1 or args.diff_steps < 1:
        parser.error("sizes must be even and ≥ 16, batches, --rounds and --diff-steps ≥ 1")
    torch.set_num_threads(args.threads)
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
    figures = {"benchmark": "pde", "quick": args.quick, "threads": args.threads, "rounds": rounds,
               "seconds_per_round": seconds, "warmup_steps": warmup, "diff_steps": args.diff_steps,
               "fvm_method": args.fvm_method, "torch_version": torch.__version__,
               "torch_cfd_version": importlib.metadata.version("torch-cfd"), "machine": platform.machine(),
               "physics": {"viscosity": VISCOSITY, "drag": DRAG, "forcing_wavenumber": FORCING_WAVENUMBER,
                           "forcing_amplitude": FORCING_AMPLITUDE, "max_velocity": MAX_VELOCITY,
                           "cfl_safety": CFL_SAFETY},
               "rows": rows, "target_ratio": TARGET_RATIO,
               "target_met": all(r["ratio"] >= TARGET_RATIO for r in rows),
               "wall_seconds": time.perf_counter() - started,
               "load_average": {"start": load, "end": os.getloadavg()[0]}}
    publish(markdown(figures), figures, args.json)


if __name__ == "__main__":
    main()
