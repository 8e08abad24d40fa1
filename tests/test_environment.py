"""environment.yml (conda) and pyproject.toml (pip) must declare the same dependency set."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name(s), where they differ.
CONDA_NAMES = {
    "torch": ["pytorch"],
    "netcdf4": ["netcdf4"],
    "eccodes": ["python-eccodes"],
    "dask": ["dask", "distributed"],
}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    return match.group(1).lower().replace("_", "-"), match.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    expected = {}
    for requirement in requirements:
        name, spec = _split(requirement)
        for conda_name in CONDA_NAMES.get(name, [name]):
            expected[conda_name] = spec
    return expected


def _environment(text: str | None = None) -> dict[str, str]:
    env = yaml.safe_load(text if text is not None else (ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    declared = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            if entry.startswith("-e"):
                continue
            name, spec = _split(entry)
            declared[name] = spec
    for tool in ("python", "pip"):
        declared.pop(tool, None)
    return declared


def test_environment_matches_pyproject():
    expected, declared = _pyproject(), _environment()
    missing = {k: v for k, v in expected.items() if k not in declared}
    extra = sorted(set(declared) - set(expected))
    differing = {k: (expected[k], declared[k]) for k in expected if k in declared and expected[k] != declared[k]}
    assert not missing, f"environment.yml lacks {missing}"
    assert not extra, f"environment.yml has packages pyproject.toml lacks: {extra}"
    assert not differing, f"version specifiers differ (pyproject, environment.yml): {differing}"


def test_python_requirement_matches():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{project['requires-python']}" in env["dependencies"]


def test_the_check_catches_a_difference():
    """A drifted environment.yml is reported (the comparison above can fail)."""
    text = (ROOT / "environment.yml").read_text().replace("zarr>=3.0,<4", "zarr>=2.18")
    assert _environment(text)["zarr"] != _pyproject()["zarr"]
