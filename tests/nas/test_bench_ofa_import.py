"""bench=ofa_import, shrunk: the pipeline's evaluation of ImageNet-setting subnets, timed from JPEG files."""

from __future__ import annotations

import pytest

from nas.bench import ofa_import


def test_ofa_import_bench_times_the_pipelines_evaluation(tmp_path):
    res = ofa_import.run({"calib_images": 8, "calib_batch": 4, "val_images": 4, "archs": ["smallest"],
                          "threads": 1, "out": str(tmp_path / "o.json")})
    (row,) = res["subnets"]
    assert res["n_calib"] == 8 and res["n_val"] == 4
    assert row["r"] == 128 and row["macs_m"] == pytest.approx(41.0, abs=1.0)
    assert row["first_s"] > 0 and row["cached_s"] > 0
    assert (tmp_path / "o.json").is_file()


def test_ofa_import_bench_refuses_an_unknown_key(tmp_path):
    with pytest.raises(ValueError, match="bench.nope is unknown"):
        ofa_import.run({"nope": 1, "out": str(tmp_path / "o.json")})
