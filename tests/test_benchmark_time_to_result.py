"""benchmarks/time_to_result.py --quick on tiny data: a JSON row for every registered family (the families no task
can take say why), each row's figures consistent with each other and with its evaluation curve, a target met at
the first evaluation stopping there, an unmet one running to the budget, and the Markdown table with a line per
row. The two Kolmogorov tasks run on one tiny staggered store (32², 3 trajectories of 48 frames, made by the
solver); the weather task on the shipped ERA5 UK month."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from earthsim.catalog import BUILTIN_CATALOGS
from earthsim.models import MODELS
from conftest import load_benchmark



@pytest.fixture(scope="module")
def ttr():
    yield from load_benchmark("time_to_result", register=True)


def _tiny_flow_entry(catalogs: Path) -> str:
    """kolmogorov-fv-32's entry made by the same solver at toy size: 3 trajectories of 48 frames, solved at 64²."""
    raw = yaml.safe_load((BUILTIN_CATALOGS / "datasets" / "kolmogorov-fv-32.yaml").read_text())
    raw.update(name="tiny-flow", store="${EARTHSIM_STORES}/tiny-flow.zarr",
               statistics="${EARTHSIM_STORES}/tiny-flow.stats.zarr",
               splits={"train": {"trajectory": [0, 2]}, "validation": {"trajectory": [2, 3]},
                       "test": {"trajectory": [2, 3]}})
    raw["source"]["params"].update(resolution=64, save_resolutions=[32], trajectories=3, frames=48, spinup_time=0.1,
                                   coarse_spinup_time=0.0, batch_size=3, chunk_frames=48)
    (catalogs / "datasets").mkdir(parents=True, exist_ok=True)
    (catalogs / "datasets" / "tiny-flow.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return "tiny-flow"


@pytest.mark.slow  # about 35 s (TSM and learned interpolation train on 32-step unrolls); run with -m slow
def test_quick_run_has_a_consistent_row_per_family(ttr, stores, tmp_path, capsys):
    flow = _tiny_flow_entry(tmp_path / "catalogs")
    path = tmp_path / "ttr.json"
    budget = 0.5
    figures = ttr.main(["--quick", "--budget", str(budget), "--windows", "3", "--dataset", f"kolmogorov={flow}",
                        "--dataset", f"staggered={flow}", "--target", "kolmogorov=100", "--target", "staggered=0",
                        "--target", "weather=0", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(figures))
    rows = figures["rows"]
    assert {r["family"] for r in rows} == set(MODELS)
    assert [r["family"] for r in rows if r.get("not_applicable")] == ["sfno"]
    run = [r for r in rows if not r.get("not_applicable")]
    assert {(r["family"], r["task"]) for r in run} == {(c.family, c.task) for c in ttr.CASES}
    assert {r["dataset"] for r in run} == {flow, "era5-uk-t2m"}
    for r in run:
        task = figures["tasks"][r["task"]]
        assert r["metric"] == task["metric"] and r["parameters"] > 0 and r["budget_seconds"] == budget
        assert r["steps"] >= 1 and r["samples"] == r["steps"] * task["batch_size"]
        values = [point["value"] for point in r["curve"]]
        assert len(values) == r["evaluations"] >= 1 and r["evaluation_seconds"] > 0
        assert all(math.isfinite(v) and v > 0 for v in values) and r["best"] == min(values)
        assert [p["samples"] for p in r["curve"]] == sorted({p["samples"] for p in r["curve"]})
        if r["task"] == "kolmogorov":  # every score is below 100: met at the first evaluation, after one step
            assert r["reached"] and r["stopped"] == "target" and r["evaluations"] == r["steps"] == 1
            assert r["samples_to_target"] == r["samples"] == task["batch_size"] and r["steps_to_target"] == 1
            assert 0 < r["train_seconds_to_target"] <= r["train_seconds"]
        else:  # a target of 0 is never met: trained to the budget, and evaluated at the step that ended past it
            assert not r["reached"] and r["stopped"] == "max_seconds" and r["train_seconds"] >= budget
            assert r["samples_to_target"] is None and r["train_seconds_to_target"] is None
            assert r["curve"][-1]["samples"] == r["samples"]
    for name, task in figures["tasks"].items():
        assert 0 < task["persistence"] and task["windows"] == 3
    table = capsys.readouterr().out
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 2  # and the header, its rule
    assert table.count("| yes |") == sum(r["task"] == "kolmogorov" for r in run)
    assert table.count(f"not reached in {budget:g} s") == sum(r["task"] != "kolmogorov" for r in run)
    assert "| sfno | — | — | not applicable" in table
