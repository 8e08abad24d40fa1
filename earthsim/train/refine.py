"""The Spectral Refiner's fine-tuning (Cao et al. 2025, scaomath/torch-cfd): a trained space-time FNO's output
spectral convolution rebuilt with many more modes and fine-tuned, everything else frozen, on the negative Sobolev
(H⁻¹) norm of the vorticity equation's residual on the predicted space-time trajectory.

The residual of ∂ω/∂t + u·∇ω = ν∇²ω − αω + F is evaluated at every predicted frame, on the store's
periodic box [0, 2π)² with the viscosity, drag and forcing the store records (``DataSpec.physics``):

- ∂ω/∂t comes from the trajectory itself, the input frames followed by the predicted ones
  ``time_step`` apart, by fourth-order finite differences (the derivative of the polynomial
  through the five frames nearest each frame: centred inside, one-sided at the last frames) —
  never from a solver step, which would make the residual vanish by construction;
- u·∇ω is the product of spectral derivatives formed on a 3/2-padded grid and truncated back, so
  the quadratic term is free of aliasing on the grid's modes; ν∇²ω spectrally.

‖r‖²_{H⁻¹} = ∫ r (a − Δ)⁻¹ r dx = (2π)² Σ_k |r̂_k|² / (a + |k|²) by Parseval (r̂ the Fourier
coefficients, ``norm="forward"``), with a = 10^-1.5, the reference's value; the loss is its root mean
square over the predicted frames, averaged over the batch. Two differences from the reference's code: the
shift is applied on [0, 2π)², so for the FNO paper's unit-box flow it weighs the mean mode as a shift of
10^-1.5/(4π²) would on the unit box (the reference applies 10^-1.5 there); and this is the textbook H⁻¹
norm, where torch-cfd's ``SobolevLoss`` takes the square root of the weight (effectively H^{-1/2}).

Fine-tuning adapts the model to the inputs it is given (the spectral bias acts as a source term
fitted to them): it is test-time refinement of those windows, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch

from earthsim.errors import EarthsimError
from earthsim.models.base import EarthsimModel
from earthsim.models.spec import DataSpec
from earthsim.sim.navier_stokes import vorticity_forcing

SOBOLEV_SHIFT = 10 ** -1.5  # a in (a − Δ)⁻¹, as the reference's fine-tuning
VORTICITY = "vorticity"


@dataclasses.dataclass(frozen=True)
class Physics:
    """The vorticity equation of a store on [0, 2π)²: viscosity ν, drag α, forcing F [H, W] (float64)."""

    viscosity: float
    drag: float
    forcing: torch.Tensor

    @classmethod
    def from_spec(cls, spec: DataSpec) -> "Physics":
        """Read from the physics attributes a Navier–Stokes store records; refuses data without them."""
        physics = spec.physics
        missing = [k for k in ("flow", "viscosity", "drag", "domain_length") if k not in physics]
        if missing:
            raise EarthsimError(f"refine: the data records no {missing[0]!r} physics attribute; the residual needs a "
                                "store written by earthsim's Navier–Stokes solver")
        if abs(float(physics["domain_length"]) - 2 * math.pi) > 1e-9:
            raise EarthsimError(f"refine: domain_length {physics['domain_length']} is not 2π, the box the solver "
                                "and the residual work on")
        height, width = spec.shape
        if height != width:
            raise EarthsimError(f"refine: the residual needs a square grid, got {height}x{width}")
        return cls(float(physics["viscosity"]), float(physics["drag"]), vorticity_forcing(physics, height))


def _wavenumbers(n: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers k_y [n, 1] and k_x [1, n] of the full 2-D FFT of an n² grid."""
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype, device=device)
    return k[:, None], k[None, :]


def _corners(n: int) -> list[tuple[slice, slice]]:
    """Index blocks of the modes |k_y|, |k_x| < n/2 in a full 2-D FFT (the Nyquist row and column left out)."""
    half = n // 2
    sides = (slice(0, half), slice(-(half - 1), None)) if half > 1 else (slice(0, half),)
    return [(sy, sx) for sy in sides for sx in sides]


def _padded_product(a_hat: torch.Tensor, b_hat: torch.Tensor, n: int) -> torch.Tensor:
    """Fourier coefficients (``norm="forward"``) of a·b on the n² grid, the product formed on a 3n/2 grid (the
    3/2 rule: no aliasing into the modes |k| < n/2 kept; Nyquist modes are dropped)."""
    m = 3 * n // 2

    def pad(hat):
        out = hat.new_zeros(hat.shape[:-2] + (m, m))
        for sy, sx in _corners(n):
            out[..., sy, sx] = hat[..., sy, sx]
        return torch.fft.ifft2(out, norm="forward").real

    product = torch.fft.fft2(pad(a_hat) * pad(b_hat), norm="forward")
    out = product.new_zeros(product.shape[:-2] + (n, n))
    for sy, sx in _corners(n):
        out[..., sy, sx] = product[..., sy, sx]
    return out


def time_derivative(trajectory: torch.Tensor, time_step: float, first: int = 0, order: int = 4) -> torch.Tensor:
    """d/dt of ``trajectory`` ``[B, T, ...]`` (frames ``time_step`` apart) at frames ``first`` … ``T - 1``: the
    derivative of the polynomial through the ``order + 1`` frames nearest each one (error O(time_step^order))."""
    frames = trajectory.shape[1]
    if frames < order + 1:
        raise EarthsimError(f"refine: a time derivative of order {order} needs >= {order + 1} frames (inputs and "
                            f"predictions), got {frames}")
    out = []
    for j in range(first, frames):
        start = min(max(j - order // 2, 0), frames - order - 1)
        offsets = torch.arange(start - j, start - j + order + 1, dtype=torch.float64)
        # weights c with Σ c_i offset_i^p = d/ds s^p at s = 0 (1 for p = 1, else 0): the derivative there
        vandermonde = offsets[None, :] ** torch.arange(order + 1, dtype=torch.float64)[:, None]
        target = torch.zeros(order + 1, dtype=torch.float64)
        target[1] = 1.0
        weights = torch.linalg.solve(vandermonde, target).to(trajectory.dtype) / time_step
        out.append(torch.einsum("s,bs...->b...", weights.to(trajectory.device), trajectory[:, start:start + order + 1]))
    return torch.stack(out, dim=1)


def vorticity_residual(trajectory: torch.Tensor, time_step: float, physics: Physics, first: int = 0) -> torch.Tensor:
    """Residual ∂ω/∂t + u·∇ω − ν∇²ω + αω − F ``[B, T - first, n, n]`` at frames ``first`` … of ``trajectory``
    ``[B, T, n, n]`` (vorticity frames ``time_step`` apart on [0, 2π)², T ≥ 5), ∂ω/∂t by fourth-order finite
    differences over the frames (see the module docstring)."""
    n = trajectory.shape[-1]
    dwdt = time_derivative(trajectory, time_step, first)
    w = trajectory[:, first:]
    w_hat = torch.fft.fft2(w, norm="forward")
    ky, kx = _wavenumbers(n, w.dtype, w.device)
    k2 = kx**2 + ky**2
    psi_hat = w_hat / torch.where(k2 > 0, k2, torch.ones_like(k2))
    psi_hat = torch.where(k2 > 0, psi_hat, torch.zeros_like(psi_hat))
    u_hat, v_hat = 1j * ky * psi_hat, -1j * kx * psi_hat  # u = ∂ψ/∂y, v = -∂ψ/∂x
    advection = _padded_product(u_hat, 1j * kx * w_hat, n) + _padded_product(v_hat, 1j * ky * w_hat, n)
    forcing_hat = torch.fft.fft2(physics.forcing.to(device=w.device, dtype=w.dtype), norm="forward")
    linear = physics.viscosity * k2 + physics.drag  # −ν∇² + α in Fourier space
    rest = torch.fft.ifft2(advection + linear * w_hat - forcing_hat, norm="forward").real
    return dwdt + rest


def hminus1_norm(field: torch.Tensor, shift: float = SOBOLEV_SHIFT) -> torch.Tensor:
    """Per sample ``[B]``: the root mean square over frames of ‖field(t)‖_{H⁻¹} on [0, 2π)², ``field``
    ``[B, T, n, n]``, through Parseval: ‖r‖² = (2π)² Σ_k |r̂_k|²/(shift + |k|²)."""
    n = field.shape[-1]
    ky, kx = _wavenumbers(n, field.dtype, field.device)
    weight = (2 * math.pi) ** 2 / (shift + kx**2 + ky**2)
    squared = (torch.fft.fft2(field, norm="forward").abs() ** 2 * weight).sum(dim=(-2, -1))
    return squared.mean(dim=1).sqrt()


def relative_l2(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per sample ``[B]``: ‖prediction − truth‖ / ‖truth‖ over the whole predicted space-time window."""
    return (prediction - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)


def residual_norm(model: EarthsimModel, x: torch.Tensor, prediction: torch.Tensor, physics: Physics,
                  shift: float = SOBOLEV_SHIFT) -> torch.Tensor:
    """Per sample ``[B]``: the H⁻¹ norm of the residual at the predicted frames of ``prediction``
    ``[B, T_out, C_out, H, W]`` following the inputs ``x`` ``[B, T_in, C_in, H, W]`` (physical units)."""
    spec = model.spec
    trajectory = torch.cat([x[:, :, spec.inputs.index(VORTICITY)], prediction[:, :, spec.outputs.index(VORTICITY)]],
                           dim=1)
    return hminus1_norm(vorticity_residual(trajectory, spec.time_step, physics, first=x.shape[1]), shift)


@dataclasses.dataclass(frozen=True)
class RefineResult:
    """What fine-tuning did: the residual norm per step (before each update, then after the last), and its time."""

    residual_norms: list[float]
    seconds: float
    modes: tuple[int, int, int]


def check_refinable(model: EarthsimModel) -> None:
    """Refuse, naming why, a model the Spectral Refiner cannot fine-tune."""
    if not hasattr(model, "expand_output_modes"):
        raise EarthsimError(f"refine: model {getattr(model, 'model_name', type(model).__name__)!r} has no output "
                            "spectral convolution to refine; train a spacetime-fno")
    spec = model.spec
    if VORTICITY not in spec.outputs:
        raise EarthsimError(f"refine: the model predicts {list(spec.outputs)}; the residual needs 'vorticity'")
    if spec.lead_times and any(abs(lead - spec.time_step) > 1e-9 * spec.time_step for lead in spec.lead_times):
        raise EarthsimError(f"refine: the model was trained at leads {list(spec.lead_times)}, not one frame interval "
                            f"{spec.time_step} apart; the residual needs evenly spaced frames")


def refine(model: EarthsimModel, x: torch.Tensor, static: torch.Tensor | None = None, *,
           modes: tuple[int, int, int], steps: int = 50, lr_bias: float = 1e-4, lr_weight: float = 1e-4,
           shift: float = SOBOLEV_SHIFT) -> RefineResult:
    """Fine-tune ``model`` in place on the inputs ``x`` ``[B, T_in, C_in, H, W]`` (physical units).

    Rebuilds its output spectral convolution with ``modes`` (trained weights in the low modes, so the
    output is unchanged until the first update), freezes every other parameter and takes ``steps``
    Adam steps on the batch mean of the residual's H⁻¹ norm (learning rates ``lr_bias`` for the
    spectral bias, ``lr_weight`` for the weights; both in the amplitude units of the forward-normalised
    transform). The physics is read from the model's data spec.
    """
    check_refinable(model)
    if steps < 1:
        raise EarthsimError(f"refine: steps must be >= 1, got {steps}")
    physics = Physics.from_spec(model.spec)
    model.expand_output_modes(tuple(modes))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    conv = model.output_conv
    for parameter in (conv.weight, conv.bias):
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [conv.bias], "lr": lr_bias},
                                  {"params": [conv.weight], "lr": lr_weight}])
    model.eval()
    norms = []
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = residual_norm(model, x, model(x, static), physics, shift).mean()
        loss.backward()
        optimizer.step()
        norms.append(loss.item())
    with torch.no_grad():
        norms.append(residual_norm(model, x, model(x, static), physics, shift).mean().item())
    seconds = time.perf_counter() - start
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return RefineResult(norms, seconds, tuple(conv.modes))


def full_modes(model: EarthsimModel) -> tuple[int, int, int]:
    """The output convolution's modes without frequency truncation: every wavenumber the grid and both window
    lengths resolve."""
    height, width = model.spec.shape
    return height // 2, width // 2, min(model.t_in, model.t_out) // 2 + 1


def refine_export(run: str, dataset: str, out: str, *, split: str = "test", windows: tuple[int, ...] = (0,),
                  modes: tuple[int, int, int] | None = None, steps: int = 50, lr_bias: float = 1e-4,
                  lr_weight: float = 1e-4, overwrite: bool = False) -> dict:
    """Fine-tune the exported model of ``run`` on windows ``windows`` of ``dataset``'s ``split`` and write a run
    folder ``out`` (through a temporary name) with the refined ``model.pt`` and ``refine.json``: relative L2 to
    the true frames and the residual's H⁻¹ norm before and after, and the fine-tuning time. Returns that record."""
    import json
    from pathlib import Path

    from earthsim import catalog
    from earthsim.data.store import atomic_output
    from earthsim.data.windows import WindowDataset
    from earthsim.models.export import EXPORT_NAME, export_model, load_exported

    model, record = load_exported(run)
    check_refinable(model)
    modes = full_modes(model) if modes is None else tuple(int(m) for m in modes)
    data = WindowDataset(catalog.get_entry(dataset), split, t_in=model.t_in, t_out=model.t_out,
                         stride=record.stride, normalise=False, lead_strides=record.lead_strides)
    for key in ("flow", "viscosity", "drag", "forcing_wavenumber", "forcing_amplitude"):
        if data.physics.get(key) != model.spec.physics.get(key):
            raise EarthsimError(f"refine: dataset {dataset!r} has {key} {data.physics.get(key)!r}, the model was "
                                f"trained on {model.spec.physics.get(key)!r}; refine on data of the same physics")
    bad = [w for w in windows if not 0 <= w < len(data)]
    if bad or not windows:
        raise EarthsimError(f"--windows: {bad or 'none given'}: give window indices in [0, {len(data)}) of split "
                            f"{split!r}")
    samples = [data[w] for w in windows]
    x = torch.stack([s["x"] for s in samples]).double()
    truth = torch.stack([s["y"] for s in samples])[:, :, model.spec.output_index].double()
    static = samples[0].get("static")
    model = model.double()
    physics = Physics.from_spec(model.spec)

    def measure() -> dict:
        with torch.no_grad():
            prediction = model(x, static)
            return {"relative_l2": relative_l2(prediction, truth).tolist(),
                    "residual_hminus1": residual_norm(model, x, prediction, physics).tolist()}

    before = measure()
    result = refine(model, x, static, modes=modes, steps=steps, lr_bias=lr_bias, lr_weight=lr_weight)
    after = measure()
    summary = {"run": str(run), "dataset": dataset, "split": split, "windows": list(windows), "modes_before":
               list(record.config.get("output_modes") or record.config["n_modes"]), "modes": list(result.modes),
               "steps": steps, "lr_bias": lr_bias, "lr_weight": lr_weight, "sobolev_shift": SOBOLEV_SHIFT,
               "seconds": result.seconds, "before": before, "after": after, "residual_per_step": result.residual_norms}
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        export_model(model.float(), Path(tmp) / EXPORT_NAME, dataset=record.dataset, stride=record.stride,
                     lead_strides=record.lead_strides, step=record.step,
                     train_config={**record.train_config, "refine": {k: v for k, v in summary.items()
                                                                     if k not in ("before", "after",
                                                                                  "residual_per_step")}})
        (Path(tmp) / "refine.json").write_text(json.dumps(summary, indent=2))
    return summary
