"""What the tests share: where the real sample files are, and fixtures that keep stores out of the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthsim import catalog

#: The real samples the built-in catalog entries ingest, installed with the package.
SAMPLE_DATA = catalog.SAMPLE_DATA
#: Real files only the tests use (see tests/data/README.md).
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def stores(tmp_path, monkeypatch) -> Path:
    """``${EARTHSIM_STORES}`` resolves to ``tmp_path/stores``, so nothing is written into the checkout."""
    monkeypatch.setenv("EARTHSIM_STORES", str(tmp_path / "stores"))
    return tmp_path / "stores"
