"""Training metrics: one JSON object per line in ``metrics.jsonl`` and the same scalars in TensorBoard.

Only rank 0 writes; appending keeps the record of a resumed run continuous.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, kind: str, **values: float) -> None:
        """Record ``values`` at ``step`` under ``kind`` ("train", "validation")."""
        if not self.enabled:
            return
        record = {"step": step, "kind": kind, **{k: float(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(_line(record))
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{kind}/{key}", float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: str | os.PathLike, kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]


def truncate_metrics(run_dir: str | os.PathLike, after_step: int) -> None:
    """Drop the records logged after ``after_step`` (what a killed run logged past its last checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= after_step]
    (Path(run_dir) / "metrics.jsonl").write_text("".join(_line(r) for r in kept))


def _line(record: dict) -> str:
    return json.dumps(record) + "\n"
