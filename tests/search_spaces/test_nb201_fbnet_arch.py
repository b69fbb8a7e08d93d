"""NB201 and FBNet architecture types: canonical strings over the whole published data, encodings, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search_spaces.fbnet.arch import OPS as FB_OPS
from search_spaces.fbnet.arch import FBNetArchitecture, encode_costs, layer_stage, op_cost
from search_spaces.fbnet.arch import encode_onehot as fb_onehot
from search_spaces.nb201.arch import OPS as NB_OPS
from search_spaces.nb201.arch import NB201Architecture, encode_graph
from search_spaces.nb201.arch import encode_onehot as nb_onehot


def test_all_15625_nb201_strings_round_trip(shared_data: Path) -> None:
    strings = json.loads((shared_data / "hw-nas-bench" / "nb201_index_to_arch_str.json").read_text())
    assert len(strings) == 15625
    archs = [NB201Architecture.from_string(s) for s in strings]
    assert [a.to_string() for a in archs] == strings
    assert len(set(archs)) == 15625  # distinct strings are distinct (hashable) archs
    x = nb_onehot(archs)
    assert x.shape == (15625, 30) and (x.sum(1) == 6).all()
    assert len({row.tobytes() for row in x}) == 15625


def test_all_5000_fbnet_strings_round_trip(shared_data: Path) -> None:
    df = pd.read_csv(shared_data / "latency" / "fbnet_help.csv.gz", usecols=["arch", "device"])
    strings = list(df.loc[df["device"] == df["device"].iloc[0], "arch"])
    assert len(strings) == 5000
    archs = [FBNetArchitecture.from_string(s) for s in strings]
    assert [a.to_string() for a in archs] == strings and len(set(archs)) == 5000
    x = fb_onehot(archs)
    assert x.shape == (5000, 22 * 9) and (x.sum(1) == 22).all()


def test_nb201_example_and_graph_encoding() -> None:
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    a = NB201Architecture.from_string(s)
    assert a.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert a == NB201Architecture.from_index([NB_OPS.index(o) for o in a.ops]) and hash(a) == hash(NB201Architecture(a.ops))
    ops, adj = encode_graph([a])
    assert ops.shape == (1, 8, 7) and adj.shape == (1, 8, 8)
    assert (ops[0].sum(1) == 1).all() and ops[0, 1, 1 + NB_OPS.index("nor_conv_3x3")] == 1
    # edge (2<-1) (node 3) is fed by the op node of edge (1<-0) (node 1); node 3 edges feed the output
    assert adj[0, 1, 3] == 1 and adj[0, 0, 1] == 1 and adj[0, 4:7, 7].tolist() == [1, 1, 1] and adj[0, 1, 7] == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 node groups"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "expected 'op~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "has 1 inputs; expected 2"),
    ],
)
def test_nb201_bad_strings(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        NB201Architecture.from_string(text)
    assert "\n" not in str(err.value)


def test_fbnet_errors_and_frozen() -> None:
    good = ",".join(["k3_e1"] * 22)
    with pytest.raises(ValueError, match="has 21 ops; expected 22"):
        FBNetArchitecture.from_string(",".join(["k3_e1"] * 21))
    with pytest.raises(ValueError, match="op 'k7_e6'"):
        FBNetArchitecture.from_string(good.replace("k3_e1", "k7_e6", 1))
    a = FBNetArchitecture.from_string(good)
    with pytest.raises(AttributeError):
        a.ops = ()  # type: ignore[misc]
    assert FBNetArchitecture.from_index([0] * 22) == a and {a: 1}[FBNetArchitecture.from_string(good)] == 1


def test_fbnet_cost_features() -> None:
    assert [layer_stage(i) for i in (0, 1, 4, 5, 21)] == [0, 1, 1, 2, 6]
    assert op_cost("skip", 16, 24, 32, 32) == (0.0, 0.0, 0.0)
    # k3_e6 on 16->16 channels at 32x32: pw 2*32*32*16*96, dw 32*32*96*9
    pw, dw, _ = op_cost("k3_e6", 16, 16, 32, 32)
    assert pw == 2 * 32 * 32 * 16 * 96 and dw == 32 * 32 * 96 * 9
    assert op_cost("k3_e1_g2", 32, 32, 8, 8)[0] == op_cost("k3_e1", 32, 32, 8, 8)[0] / 2
    skip = FBNetArchitecture(("skip",) * 22)
    big = FBNetArchitecture(("k5_e6",) * 22)
    x = encode_costs([skip, big])
    assert x.shape == (2, 25) and np.allclose(x[0], 0) and (x[1, :4] > 0).all()
    assert np.isclose(x[1, 0], x[1, 4::3].sum()) and x[1, 3] == 22
    assert encode_costs([big], "imagenet")[0, 0] > x[1, 0]
    assert set(FB_OPS) == {"k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"}


def test_fbnet_shape_counts_tie_layers_of_one_shape() -> None:
    from search_spaces.fbnet.arch import encode_shape_counts, layer_shape_classes

    cls = layer_shape_classes()
    # CIFAR-100: every stage's first layer has its own shape, layers 2-4 of a stage share one
    assert cls.tolist() == [0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 8, 8, 8, 9, 10, 10, 10, 11]
    archs = [FBNetArchitecture.from_index(np.random.default_rng(s).integers(0, 9, 22)) for s in range(20)]
    x = encode_shape_counts(archs)
    assert x.shape == (20, 12 * 9) and (x.sum(1) == 22).all()
    # summing the one-hot columns of each class gives the counts
    onehot = fb_onehot(archs).reshape(20, 22, 9)
    expect = np.stack([onehot[:, cls == c].sum(1) for c in range(12)], axis=1).reshape(20, -1)
    assert np.array_equal(x, expect)
    assert layer_shape_classes("imagenet").max() == 11


def test_fbnet_shape_counts_explain_hwnasbench_latency(shared_data: Path) -> None:
    """HW-NAS-Bench's per-layer latency tables give one cost per (shape class, op): the tie loses nothing."""
    from search_spaces.fbnet.arch import layer_shape_classes

    z = np.load(shared_data / "hw-nas-bench" / "fbnet_cifar100_additive_latency_DERIVED.npz", allow_pickle=True)
    table, cls = z["table_ms"], layer_shape_classes()
    for d, name in enumerate(z["devices"]):
        for c in range(12):
            rows = table[d, cls == c]
            assert np.allclose(rows, rows[0], atol=1e-3), f"{name}: layers of shape class {c} cost differently"
