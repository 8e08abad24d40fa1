"""benchmarks/loader.py on a tiny store (12 frames, no worker processes, one timed pass): every reader of both
stores (uncompressed and Blosc-compressed) reads the same windows and gets a row with positive rates in the JSON
and the table, the smooth benchmark field compresses (so the ratio means something), and a kept compressed store
made with another codec is refused rather than reused."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark



@pytest.fixture(scope="module")
def loader():
    yield from load_benchmark("loader")


def test_every_reader_of_both_stores_in_json_and_table(loader, tmp_path, capsys):
    path = tmp_path / "loader.json"
    loader.main(["--frames", "12", "--workers", "0", "--repeat", "1", "--dir", str(tmp_path / "stores"), "--keep",
                 "--json", str(path)])
    figures = json.loads(path.read_text())
    rows = {(r["store"], r["reader"]) for r in figures["results"]}
    assert rows == set(loader_readers())
    for row in figures["results"]:
        assert row["workers"] == 0 and row["samples"] == 10 and row["mb_per_s"] > 0 and row["samples_per_s"] > 0
    ratios = figures["ratios"]["workers=0"]
    for value in (*(v for k, v in ratios.items() if k != "compressed"), *ratios["compressed"].values()):
        assert value > 0
    packed = figures["compressed_store"]
    assert packed["codec"] == {"cname": "zstd", "clevel": 5, "shuffle": "shuffle"}
    assert 1.3 < packed["compression_ratio"] < 3  # smooth field plus noise: compresses, but not as a constant would
    assert packed["bytes"] < figures["store"]["bytes"] and packed["decode_mb_per_s_one_thread"] > 0
    table = capsys.readouterr().out
    assert table.count("| uncompressed |") == 7 + 1 and table.count("| compressed |") == 6 + 1  # readers + ratio row

    with pytest.raises(SystemExit, match="remove it or use another --dir"):
        loader.main(["--frames", "12", "--workers", "0", "--repeat", "1", "--dir", str(tmp_path / "stores"),
                     "--cname", "lz4"])


def loader_readers():
    plain = ["earthsim", "earthsim, file:// URL", "earthsim, fsspec URL", "zarr-python", "xbatcher MapDataset",
             "chunk files (raw read)", "memory copy"]
    packed = ["earthsim", "earthsim, fsspec URL", "zarr-python", "xbatcher MapDataset", "chunk files + decode",
              "decode only (chunks in memory)"]
    return [("uncompressed", r) for r in plain] + [("compressed", r) for r in packed]
