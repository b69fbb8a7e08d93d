"""The latency interchange loader: real files, pivoting, and one-line errors on bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from latency_luts.interchange import latency_matrix, load_latency_table

HEADER = "space,arch,device,latency_ms\n"


def _csv(tmp_path: Path, body: str, name: str = "t.csv", header: str = HEADER) -> Path:
    p = tmp_path / name
    p.write_text(header + body)
    return p


def test_real_nb201_file_filters_and_pivots(shared_data: Path) -> None:
    path = shared_data / "latency" / "nb201_help.csv.gz"
    df = load_latency_table([path], space="nb201", devices=["pixel3", "eyeriss"])
    assert list(df.columns) == ["space", "arch", "device", "latency_ms"]
    assert set(df["device"]) == {"pixel3", "eyeriss"} and len(df) == 2 * 15625
    mat = latency_matrix(df)
    assert mat.shape == (15625, 2) and list(mat.columns) == ["eyeriss", "pixel3"]  # order of first appearance
    assert (mat.to_numpy() > 0).all()
    # dataset index = order of first appearance = NB201 index order
    import json

    idx = json.loads((shared_data / "hw-nas-bench" / "nb201_index_to_arch_str.json").read_text())
    assert list(mat.index[:50]) == idx[:50] and mat.index[-1] == idx[-1]


def test_gzip_and_multiple_files_concatenate(tmp_path: Path) -> None:
    a = tmp_path / "a.csv.gz"
    with gzip.open(a, "wt") as fh:
        fh.write(HEADER + "nb201,x1,d1,1.5\nnb201,x2,d1,2.5\n")
    b = _csv(tmp_path, "nb201,x1,d2,3.0\nnb201,x3,d2,4.0\n", "b.csv")
    mat = latency_matrix(load_latency_table([a, b]))
    assert list(mat.index) == ["x1", "x2", "x3"] and list(mat.columns) == ["d1", "d2"]
    assert mat.loc["x1", "d2"] == 3.0 and np.isnan(mat.loc["x2", "d2"])


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        ("nb201,x,d,1.0\n", "space,arch,device\n", "lacks column 'latency_ms'"),
        ("nb201,x,d,\n", HEADER, "latency_ms=nan"),
        ("nb201,x,d,-2\n", HEADER, "latency_ms=-2"),
        ("nb201,x,d,0\n", HEADER, "latency_ms=0"),
        ("nb201,x,d,abc\n", HEADER, "latency_ms='abc'"),
        ("nas101,x,d,1.0\n", HEADER, "unknown space 'nas101'"),
        ("nb201,x,d,1.0\nnb201,x,d,2.0\n", HEADER, "duplicate measurement for arch 'x' on device 'd'"),
        (",x,d,1.0\n", HEADER, "empty 'space'"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, body: str, header: str, match: str) -> None:
    p = _csv(tmp_path, body, header=header)
    with pytest.raises(ValueError, match=match) as err:
        load_latency_table(p)
    assert "\n" not in str(err.value)


def test_bad_filters(tmp_path: Path) -> None:
    p = _csv(tmp_path, "nb201,x,d,1.0\n")
    with pytest.raises(ValueError, match="unknown space filter 'nb999'"):
        load_latency_table(p, space="nb999")
    with pytest.raises(ValueError, match="space 'fbnet' has no rows"):
        load_latency_table(p, space="fbnet")
    with pytest.raises(ValueError, match="device 'tpu' has no rows"):
        load_latency_table(p, devices=["tpu"])
    with pytest.raises(ValueError, match="does not exist"):
        load_latency_table(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no latency files"):
        load_latency_table([])


def test_matrix_rejects_mixed_spaces(tmp_path: Path) -> None:
    p = _csv(tmp_path, "nb201,x,d,1.0\nfbnet,y,d,2.0\n")
    with pytest.raises(ValueError, match="mixes spaces"):
        latency_matrix(load_latency_table(p))
