"""The training loop: a small loop over components (data, model, optimiser, checkpointer, metrics).

One code path for one process and for N ranks under ``torchrun``: the model is always sharded with
FSDP2 over a DeviceMesh (a world of one when run alone). Each optimiser step sees one global batch
of ``batch_size × world_size × grad_accumulation`` windows; multi-step training unrolls ``k``
autoregressive steps (loss summed over them), ``k`` raised by a curriculum from epoch to epoch.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from earthsim import catalog
from earthsim import config as config_lib
from earthsim.data.derived import climatology_of
from earthsim.data.grid import cos_latitude_weights, latitude_weights
from earthsim.data.loader import collate_windows, make_loader, set_epoch
from earthsim.data.sources import SourceWindows
from earthsim.data.stats import compute_statistics, load_climatology, load_statistics
from earthsim.data.windows import WindowDataset
from earthsim.errors import EarthsimError
from earthsim.models import (EXPORT_NAME, MODELS, Batch, DataSpec, EarthsimModel, build_model, export_model,
                             load_exported, parallelize, rollout)
from earthsim.train.checkpoint import Checkpointer
from earthsim.train.config import TrainConfig, to_yaml
from earthsim.train.distributed import World, init_world
from earthsim.train.losses import TrainingLoss
from earthsim.train.metrics import MetricsLogger, truncate_metrics
from earthsim.train.schedule import warmup_cosine


@dataclass
class Data:
    """The datasets of a run (physical units) and the data specs its model is built for, one per training source
    (the first is the validation dataset's)."""

    train: WindowDataset | SourceWindows
    validation: WindowDataset
    specs: list[DataSpec]
    windows: list[WindowDataset]  # the training windows of each source

    @property
    def spec(self) -> DataSpec:
        return self.specs[0]


def prepare_data(cfg: TrainConfig, world: World) -> None:
    """Rank 0 makes each source's store and statistics (and the climatology its derived fields read) if
    missing; the other ranks wait for it."""
    if world.is_main:
        for source in cfg.data.source_list():
            entry = catalog.get_entry(source.dataset)
            catalog.open_dataset(entry)
            compute_statistics(entry)
            if any(climatology_of(name) for name in source.derived or ()):
                load_climatology(entry)
    dist.barrier()


def build_data(cfg: TrainConfig) -> Data:
    """Training windows hold enough targets for the longest unroll; validation for the rollout check.

    Windows are read in physical units (the model normalises itself with the spec's statistics).
    """
    windows, specs = [], []
    for source in cfg.data.source_list():
        entry = catalog.get_entry(source.dataset)
        common = dict(t_in=cfg.data.t_in, stride=cfg.data.stride, variables=source.variables, normalise=False,
                      statistics=load_statistics(entry, progress=False), lead_strides=cfg.data.leads(),
                      derived=source.derived)
        train = WindowDataset(entry, "train", t_out=cfg.data.t_out * cfg.rollout.max_steps, **common)
        if not windows:
            validation = WindowDataset(entry, "validation", t_out=cfg.data.t_out * cfg.validation.rollout_steps,
                                       **common)
        windows.append(train)
        specs.append(DataSpec.from_windows(train, source.output_variables))
    return Data(windows[0] if len(windows) == 1 else SourceWindows(windows), validation, specs, windows)


def build_loss(cfg: TrainConfig, spec: DataSpec) -> TrainingLoss:
    """The experiment's loss on the predicted channels of one source, weighted per variable or channel as it says
    (names predicted by no source are refused by :func:`check_loss_weights`)."""
    variable_of = dict(zip(spec.inputs, spec.channel_variables))
    weights = [float(cfg.loss.variable_weights.get(c, cfg.loss.variable_weights.get(variable_of[c], 1.0)))
               for c in spec.outputs]
    lat = spec.grid.latitudes()
    scale = {}
    if cfg.loss.space == "normalised":
        outputs = spec.output_index
        scale = {"mean": torch.tensor([spec.statistics.mean[i] for i in outputs]),
                 "std": torch.tensor([spec.statistics.std[i] for i in outputs])}
    weighting = cos_latitude_weights if cfg.loss.latitude_weighting == "cos" else latitude_weights
    return TrainingLoss(cfg.loss.name, torch.tensor(weights), weighting(lat) if lat is not None else None,
                        p=cfg.loss.p, **scale)


def check_loss_weights(cfg: TrainConfig, specs: list[DataSpec]) -> None:
    """Every name in ``loss.variable_weights`` must be a channel or variable some source predicts."""
    known = {name for spec in specs for c, v in zip(spec.inputs, spec.channel_variables) if c in spec.outputs
             for name in (c, v)}
    unknown = sorted(set(cfg.loss.variable_weights) - known)
    if unknown:
        raise EarthsimError(f"loss.variable_weights: unknown name(s) {unknown}; valid (predicted channels and their "
                            f"variables): {sorted(known)}")


def build_training_model(cfg: TrainConfig, specs: list[DataSpec]) -> EarthsimModel:
    """Build the model for the data (every source); the family refuses data it cannot take, and the leads must
    suit it."""
    params = dict(cfg.model.params)
    fields = {f.name for f in dataclasses.fields(MODELS[cfg.model.name].config_cls)} if cfg.model.name in MODELS \
        else set()
    for key, value in (("t_in", cfg.data.t_in), ("t_out", cfg.data.t_out)):
        if key in params and params[key] != value:
            raise EarthsimError(f"model.params.{key}={params[key]} does not match data.{key}={value}")
        if key in fields:
            params[key] = value
    complete = getattr(MODELS[cfg.model.name].factory, "params_for_sources", None) if cfg.model.name in MODELS else None
    if complete is not None:
        params = complete(params, specs)
    model = build_model(cfg.model.name, params, specs[0])
    for spec in specs[1:]:
        model.add_source(spec)
    leads = cfg.data.leads()
    if leads is not None and leads != (cfg.data.stride,):
        if not model.lead_conditioned:
            raise EarthsimError(f"data: leads drawn from {list(leads)} store frames need a lead-conditioned model; "
                                f"model {cfg.model.name!r} is not")
        unrolled = {"rollout.max_steps": cfg.rollout.max_steps, "validation.rollout_steps":
                    cfg.validation.rollout_steps}
        if model.t_in > 1 and any(v > 1 for v in unrolled.values()):
            raise EarthsimError(
                f"data: with leads drawn from {list(leads)} store frames and t_in={model.t_in}, a prediction fed back "
                f"would sit a lead, not {cfg.data.stride} frame(s), after the other inputs: set "
                + " and ".join(f"{k}: 1" for k, v in unrolled.items() if v > 1) + " (the model is called directly)")
    return model


def initialise_from(model: EarthsimModel, path: str) -> str:
    """Start ``model`` from the weights of the exported model at ``path``; returns what was carried over."""
    pretrained, record = load_exported(path)
    if record.model != model.model_name:
        raise EarthsimError(f"init_from: {path} is a {record.model!r} model, this run trains {model.model_name!r}")
    return model.initialise_from(pretrained)


def _peak_memory_mb(world: World) -> float:
    if world.device.type == "cuda":
        return torch.cuda.max_memory_allocated(world.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.world = init_world(cfg.device)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.use_deterministic_algorithms(self.world.device.type == "cpu", warn_only=True)
        prepare_data(cfg, self.world)
        self.data = build_data(cfg)
        check_loss_weights(cfg, self.data.specs)
        self.losses = [build_loss(cfg, spec).to(self.world.device) for spec in self.data.specs]
        model = build_training_model(cfg, self.data.specs)
        self.initialised = initialise_from(model, cfg.init_from) if cfg.init_from else None
        self.model = parallelize(model.to(self.world.device), self.world.mesh, cfg.parallelism)
        opt = cfg.optimizer
        self.optimizer = torch.optim.AdamW(self.parameter_groups(), lr=opt.lr, betas=(opt.beta1, opt.beta2),
                                           weight_decay=opt.weight_decay)
        self.loader = make_loader(self.data.train, cfg.data.batch_size, cfg.data.num_workers, shuffle=True,
                                  seed=cfg.seed, rank=self.world.rank, world_size=self.world.size, drop_last=True)
        self.steps_per_epoch = len(self.loader) // opt.grad_accumulation
        if self.steps_per_epoch < 1:
            raise EarthsimError(
                f"data: {len(self.data.train)} training windows give no full step of batch_size="
                f"{cfg.data.batch_size} × {self.world.size} ranks × grad_accumulation={opt.grad_accumulation}")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.scheduler = warmup_cosine(self.optimizer, opt.warmup_steps, self.total_steps, opt.min_lr_ratio)
        self.checkpointer = Checkpointer(self.run_dir / "checkpoints", keep=cfg.checkpoint.keep)
        self.step = 0
        self._check_first_batch()  # before anything is written: model, data and loss must fit together
        self._prepare_run_dir(resume)
        self.metrics = MetricsLogger(self.run_dir, enabled=self.world.is_main)
        if self.initialised is not None and self.world.is_main:
            (self.run_dir / "init_from.txt").write_text(f"{cfg.init_from}: {self.initialised}\n")
            if progress:
                print(f"init_from {cfg.init_from}: {self.initialised}")

    def parameter_groups(self) -> list[dict]:
        """AdamW's groups: the family's ``no_weight_decay`` parameters (embeddings) are not decayed."""
        skip = set(self.model.no_weight_decay)
        named = list(self.model.named_parameters())
        return [{"params": [p for n, p in named if n not in skip]},
                {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]

    def _check_first_batch(self) -> None:
        """The loss of the first training batch, computed once before the run folder is touched, so that a model, data
        and loss that do not fit together fail before any output exists (random states are left as they were)."""
        batch = Batch.from_mapping(collate_windows(self.data.train.__getitems__(
            list(range(min(self.cfg.data.batch_size, len(self.data.train)))))), self.world.device)
        with torch.random.fork_rng(devices=[]), torch.no_grad(), self.cfg.parallelism.autocast(self.world.device):
            loss = self.model.training_loss(batch, self.unroll_steps(0), self.losses[batch.source])
        if loss.ndim != 0:
            raise EarthsimError(f"model {self.cfg.model.name!r}: its training loss is not a scalar ({list(loss.shape)})")

    def _prepare_run_dir(self, resume: bool) -> None:
        latest = self.checkpointer.latest()
        if resume and latest is None:
            raise EarthsimError(f"--resume: {self.run_dir} holds no checkpoint (no checkpoints/step-* folder); check "
                                "the run folder, or leave out --resume to start a new run")
        if latest is not None and not resume:
            raise EarthsimError(f"run directory {self.run_dir} already has checkpoints; pass --resume to continue it "
                                "or choose another --run-dir")
        if resume and latest is not None:
            self._check_same_run()
            restored = self.checkpointer.restore(latest, self.model, self.optimizer, self.scheduler)
            self.step = restored["step"]
            if restored["loader"] != self.loader_position():
                raise EarthsimError(f"checkpoint {latest} records loader position {restored['loader']}, but this run "
                                    f"would continue from {self.loader_position()}")
            if self.world.is_main:  # forget what the interrupted run logged after its last checkpoint
                truncate_metrics(self.run_dir, self.step)
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
            (self.run_dir / "world.yaml").write_text(yaml.safe_dump({"world_size": self.world.size}))

    def _check_same_run(self) -> None:
        """A resumed run must keep everything that decides which samples and learning rates come next."""
        saved = yaml.safe_load((self.run_dir / "config.yaml").read_text())
        now = config_lib.to_dict(self.cfg)
        keys = ("data", "model", "optimizer", "loss", "rollout", "epochs", "max_steps", "seed")
        changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in keys if saved.get(k) != now[k]]
        for k in ("param_dtype", "reduce_dtype"):  # the other parallelism options change memory, not results
            before, after = (saved.get("parallelism") or {}).get(k), now["parallelism"][k]
            if before != after:
                changed.append(f"parallelism.{k}: {before!r} -> {after!r}")
        state = self.run_dir / "world.yaml"
        if state.exists() and yaml.safe_load(state.read_text())["world_size"] != self.world.size:
            changed.append(f"world_size: {yaml.safe_load(state.read_text())['world_size']} -> {self.world.size}")
        if changed:
            raise EarthsimError(f"cannot resume {self.run_dir} with a different setup; changed: " + "; ".join(changed))

    def loader_position(self) -> dict[str, int]:
        """Where this rank's training loader stands after ``self.step`` steps: the epoch and its samples done."""
        epoch, steps_done = divmod(self.step, self.steps_per_epoch)
        return {"epoch": epoch, "samples": steps_done * self.cfg.optimizer.grad_accumulation * self.cfg.data.batch_size}

    def unroll_steps(self, epoch: int) -> int:
        r = self.cfg.rollout
        return min(r.max_steps, r.start_steps + epoch // r.increase_every)

    def train_step(self, micro_batches: list[dict], k: int) -> float:
        """One optimiser step over ``micro_batches`` with ``k`` unrolled steps; returns the global mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.world.device)
        for i, micro in enumerate(micro_batches):
            batch = Batch.from_mapping(micro, self.world.device)
            self.model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            with self.cfg.parallelism.autocast(self.world.device), self.model.reading_source(batch.source):
                loss = self.model.training_loss(batch, k, self.losses[batch.source])
            (loss / len(micro_batches)).backward()
            total += loss.detach() / len(micro_batches)
        if self.cfg.optimizer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optimizer.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        dist.all_reduce(total, op=dist.ReduceOp.AVG if self.world.device.type == "cuda" else dist.ReduceOp.SUM)
        if self.world.device.type != "cuda":
            total /= self.world.size
        return total.item()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """One-step loss and rollout RMSE per predicted channel at the last validation step (physical units,
        area-weighted on latitude grids)."""
        cfg, ds, spec = self.cfg, self.data.validation, self.data.spec
        loader = make_loader(ds, cfg.data.batch_size, 0, shuffle=False, rank=self.world.rank,
                             world_size=self.world.size, drop_last=True)  # every rank runs the same batches
        steps, t_out = cfg.validation.rollout_steps, cfg.data.t_out
        lat = spec.grid.latitudes()
        weights = torch.ones(spec.shape[0]) if lat is None else torch.as_tensor(latitude_weights(lat),
                                                                                 dtype=torch.float32)
        weights = weights.to(self.world.device).view(1, 1, 1, -1, 1)
        sums = torch.zeros(2 + len(spec.outputs), dtype=torch.float64, device=self.world.device)
        forcing = spec.forcing_index
        self.model.eval()  # no dropout or drop-path while validating; training mode comes back below
        try:
            for b, micro in enumerate(loader):
                if b == cfg.validation.max_batches:
                    break
                batch = Batch.from_mapping(micro, self.world.device)
                with cfg.parallelism.autocast(self.world.device):
                    pred = rollout(self.model, batch.x, steps * t_out, batch.static, batch.lead_time,
                                   batch.y[:, :, forcing] if forcing else None).float()
                target = batch.y[:, :, spec.output_index]
                count = batch.x.shape[0]
                sums[0] += self.losses[0](pred[:, :t_out], target[:, :t_out]) * count
                sums[1] += count
                sq = ((pred[:, -1:] - target[:, -1:]) ** 2 * weights).mean(dim=(1, 3, 4))  # last step: [B, C_out]
                sums[2:] += sq.sum(dim=0).double()
        finally:
            self.model.train()
        dist.all_reduce(sums)
        count = max(sums[1].item(), 1.0)
        result = {"loss": sums[0].item() / count}
        if len(ds.lead_times) == 1:
            where = f"lead{steps * t_out * ds.lead_times[0]:g}"
        else:  # leads drawn from a set: name the step, not one lead
            where = f"step{steps * t_out}"
        for c, name in enumerate(spec.outputs):
            result[f"rmse_{name}_{where}"] = math.sqrt(sums[2 + c].item() / count)
        return result

    def fit(self) -> dict:
        """Train to the end of the schedule, or until ``max_seconds`` of training or a validation at
        ``validation.target``; returns the summary: steps, samples, training and validation seconds (this process's,
        validation excluded from training), why it stopped, the last validation, the export and, with a target, when
        it was first reached."""
        cfg = self.cfg
        accumulation = cfg.optimizer.grad_accumulation
        per_step = accumulation * cfg.data.batch_size * self.world.size  # samples of one optimiser step, all ranks
        every = cfg.validation.every_samples
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not (self.progress and
                                                                                           self.world.is_main))
        self._clock, self._validation_seconds, self._validated_step = time.perf_counter(), 0.0, None
        self._best, self._reached = None, None
        validation, stopped = {}, None
        while self.step < self.total_steps and stopped is None:
            epoch, done_in_epoch = divmod(self.step, self.steps_per_epoch)
            k = self.unroll_steps(epoch)
            position = self.loader_position()
            set_epoch(self.loader, position["epoch"], start=position["samples"])
            iterator = iter(self.loader)
            for _ in range(done_in_epoch, self.steps_per_epoch):
                if self.step >= self.total_steps:
                    break
                started = time.perf_counter()
                micro = [next(iterator) for _ in range(accumulation)]
                lr = self.scheduler.get_last_lr()[0]
                loss = self.train_step(micro, k)
                self.step += 1
                elapsed = time.perf_counter() - started
                if not math.isfinite(loss):
                    raise EarthsimError(f"loss became {loss} at step {self.step}; lower optimizer.lr")
                if self.step % cfg.log_every == 0:
                    self.metrics.log(self.step, "train", loss=loss, lr=lr,
                                     samples_per_s=per_step / elapsed, peak_memory_mb=_peak_memory_mb(self.world),
                                     unroll_steps=k, epoch=epoch)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", epoch=epoch)
                if self.step % cfg.checkpoint.every_steps == 0:
                    self.checkpointer.save(self.step, self.model, self.optimizer, self.scheduler,
                                           self.loader_position())
                if every is not None and self.step * per_step // every > (self.step - 1) * per_step // every:
                    validation, stopped = self._validate(epoch, per_step, bar)
                if stopped is None and self._out_of_time():
                    stopped = "max_seconds"
                if stopped is not None:
                    break
            at_end = (every is None and self.step % self.steps_per_epoch == 0) or self.step >= self.total_steps \
                or stopped == "max_seconds"
            if at_end and self._validated_step != self.step:
                validation, stopped = self._validate(epoch, per_step, bar, stopped)
        bar.close()
        if self.checkpointer.latest() is None or self.checkpointer.latest().name != f"step-{self.step:08d}":
            self.checkpointer.save(self.step, self.model, self.optimizer, self.scheduler,
                                   self.loader_position())
        self.export()
        self.metrics.close()
        summary = {"steps": self.step, "samples": self.step * per_step, "train_seconds": self._train_seconds(),
                   "validation_seconds": self._validation_seconds, "stopped": stopped or "schedule",
                   "validation": validation, "export": str(self.run_dir / EXPORT_NAME)}
        if cfg.validation.target_metric is not None:
            summary["target"] = {"metric": cfg.validation.target_metric, "value": cfg.validation.target,
                                 "reached": self._reached is not None, "best": self._best, **(self._reached or {})}
        return summary

    def _train_seconds(self) -> float:
        return time.perf_counter() - self._clock - self._validation_seconds

    def _out_of_time(self) -> bool:
        """Whether ``max_seconds`` of training have passed (decided on rank 0's clock, so every rank stops together)."""
        if self.cfg.max_seconds is None:
            return False
        flag = torch.tensor(float(self._train_seconds() >= self.cfg.max_seconds), device=self.world.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _validate(self, epoch: int, per_step: int, bar, stopped: str | None = None) -> tuple[dict, str | None]:
        """Validate and log (its time kept out of the training time); ``"target"`` when the target is first met."""
        started = time.perf_counter()
        validation = self.validate()
        self._validation_seconds += time.perf_counter() - started
        self._validated_step = self.step
        samples, seconds = self.step * per_step, self._train_seconds()
        self.metrics.log(self.step, "validation", **validation, epoch=epoch, samples=samples, train_seconds=seconds)
        if self.world.is_main:
            bar.write(f"epoch {epoch}: validation " + ", ".join(f"{k} {v:.4g}" for k, v in validation.items()))
        metric, target = self.cfg.validation.target_metric, self.cfg.validation.target
        if metric is None:
            return validation, stopped
        if metric not in validation:
            raise EarthsimError(f"validation.target_metric: {metric!r} is not among the validation results "
                                f"{sorted(validation)}")
        value = validation[metric]
        self._best = value if self._best is None else min(self._best, value)
        if value <= target and self._reached is None:
            self._reached = {"step": self.step, "samples": samples, "train_seconds": seconds}
            return validation, "target"
        return validation, stopped

    def export(self) -> Path:
        """The model for forecasts, reading the first source (``data.dataset``; another source: ``init_from``)."""
        ds = self.data.windows[0]
        return export_model(self.model, self.run_dir / EXPORT_NAME, dataset=ds.entry.name, stride=ds.stride,
                            lead_strides=ds.lead_strides, step=self.step, train_config=config_lib.to_dict(self.cfg))


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` in ``run_dir`` (continuing its latest checkpoint with ``resume``)."""
    return Trainer(cfg, run_dir, resume=resume, progress=progress).fit()
