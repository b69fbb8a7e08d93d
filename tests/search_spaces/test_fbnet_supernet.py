"""FBNet supernet: weight sharing, honest grouped convs, supernet == extracted subnet, closed-form counts,
HELP archs build and run, ONNX parity, space arguments."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from latency_luts.onnx_export import export_onnx
from search_spaces import create_search_space
from search_spaces.fbnet.arch import N_LAYERS, OPS, FBNetArchitecture
from search_spaces.fbnet.static import ChannelShuffle, FBNetBlock
from search_spaces.fbnet.structure import LayerSpec, layer_specs

# (dataset, input size): ImageNet runs at a reduced 64x64 input in the many-arch checks to keep CPU time small
# (the network is fully convolutional; every layer still runs, only the feature maps are smaller).
SETTINGS = [("cifar100", 32), ("imagenet", 64)]


def randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BN statistics everywhere, so no branch is trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.15 if p.dim() > 1 else 0.5))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def small():
    space = create_search_space("fbnet", dataset="cifar100", n_classes=10, in_channels=1, input_size=32)
    return space, randomise(space.build_supernet())


# --- weight sharing and grouped convs --------------------------------------------------------------
def test_group2_ops_are_real_grouped_convs_on_the_diagonal_blocks(small):
    space, net = small
    layer = net.layers[1]  # 16 -> 24, stride 1: no residual
    spec = LayerSpec(1, 1, 32, 16, 24, 1, "k3_e1_g2")
    block = FBNetBlock(spec)
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [2, 16, 2]
    assert sum(isinstance(m, ChannelShuffle) for m in block.modules()) == 1
    # independent reference: dense 1x1 convs with the off-diagonal blocks zeroed, shuffle by explicit index
    x = torch.randn(2, 16, 8, 8)
    mask_e = torch.zeros(16, 16, 1, 1)
    mask_e[:8, :8] = mask_e[8:, 8:] = 1
    mask_p = torch.zeros(24, 16, 1, 1)
    mask_p[:12, :8] = mask_p[12:, 8:] = 1
    with torch.no_grad():
        h = F.conv2d(x, layer.expand_conv.weight[:16] * mask_e)
        h = F.relu(F.batch_norm(h, layer.expand_bn.running_mean[:16], layer.expand_bn.running_var[:16],
                                layer.expand_bn.weight[:16], layer.expand_bn.bias[:16], False, 0.0, 1e-5))
        h = h[:, [c for i in range(8) for c in (i, 8 + i)]]  # shuffle: channel 2i <- i, 2i+1 <- 8+i
        h = F.conv2d(h, layer.dw_conv.weight[:16, :, 1:4, 1:4], None, 1, 1, 1, 16)
        h = F.relu(F.batch_norm(h, layer.dw_bn.running_mean[:16], layer.dw_bn.running_var[:16],
                                layer.dw_bn.weight[:16], layer.dw_bn.bias[:16], False, 0.0, 1e-5))
        h = F.conv2d(h, layer.project_conv.weight[:, :16] * mask_p)
        ref = F.batch_norm(h, layer.project_bn.running_mean, layer.project_bn.running_var,
                           layer.project_bn.weight, layer.project_bn.bias, False, 0.0, 1e-5)
        out = layer(x, "k3_e1_g2")
    assert float((out - ref).abs().max()) <= 1e-5 and float(ref.abs().max()) > 1e-2
    # the extracted subnet holds the same real grouped convs
    arch = FBNetArchitecture(("k5_e6", "k3_e1_g2") + ("skip",) * (N_LAYERS - 2))
    sub = space.extract(net, arch)
    assert [c.groups for c in sub.blocks[1].modules() if isinstance(c, torch.nn.Conv2d)] == [2, 16, 2]
    assert sum(isinstance(m, ChannelShuffle) for m in sub.modules()) == 1


def test_ops_share_sliced_weights(small):
    space, net = small
    layer = net.layers[2]  # 24 -> 24, residual
    ops = ("k3_e1", "k5_e3", "k3_e6") + ("skip",) * (N_LAYERS - 3)
    sub = space.extract(net, FBNetArchitecture(("skip", "skip") + ops[:3] + ("skip",) * (N_LAYERS - 5)))
    b_e1, b_e3, b_e6 = sub.blocks[2], sub.blocks[3], sub.blocks[4]
    full = layer.expand_conv.weight
    assert torch.equal(b_e1.body[0].weight, full[:24])  # e1 = first cin*1 rows of the e6 weight
    assert torch.equal(b_e3.body[0].weight, net.layers[3].expand_conv.weight[:72])
    assert torch.equal(b_e1.body[3].weight, layer.dw_conv.weight[:24, :, 1:4, 1:4])  # k3 = centre of 5x5
    assert torch.equal(b_e6.body[3].weight, net.layers[4].dw_conv.weight[:, :, 1:4, 1:4])
    assert torch.equal(b_e1.body[6].weight, layer.project_conv.weight[:, :24])
    assert isinstance(sub.blocks[0], torch.nn.Identity)  # layer 0: 16 -> 16, stride 1: identity skip
    assert isinstance(sub.blocks[1].body[0], torch.nn.Conv2d)  # layer 1: 16 -> 24: 1x1 conv + BN skip
    assert b_e1.residual and not sub.blocks[1].residual


def test_closed_form_parameter_count_by_hand():
    # k3_e1_g2 at 16 -> 24: expand 16*16/2 + BN 2*16, dw 16*9 + 2*16, project 16*24/2 + BN 2*24
    spec = LayerSpec(1, 1, 32, 16, 24, 1, "k3_e1_g2")
    assert spec.params() == 128 + 32 + 144 + 32 + 192 + 48 == n_params(FBNetBlock(spec))
    skip = LayerSpec(5, 2, 32, 24, 32, 2, "skip")
    assert skip.params() == 24 * 32 + 64 == n_params(FBNetBlock(skip)) and skip.out_hw == 16
    assert LayerSpec(2, 1, 32, 24, 24, 1, "skip").params() == 0


def test_extract_leaves_supernet_unchanged(small):
    space, net = small
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sub = space.extract(net, space.sample(np.random.default_rng(3)))
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(hasattr(m, "active_op") for m in net.modules())


# --- supernet == extracted, closed-form counts --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dataset, size", SETTINGS)
def test_extracted_equals_supernet_for_200_random_archs(dataset, size):
    space = create_search_space("fbnet", dataset=dataset, n_classes=10, in_channels=3, input_size=size)
    net = randomise(space.build_supernet(), seed=1)
    rng = np.random.default_rng(1)
    archs = [space.largest(), space.smallest()] + space.sample_many(198, rng)
    worst = 0.0
    for arch in archs:
        x = torch.randn(2, 3, size, size)
        sub = space.extract(net, arch).eval()
        with torch.no_grad():
            ref, out = net(x, arch), sub(x)
        assert ref.shape == (2, 10) and ref.abs().max() > 1e-3  # non-trivial output: equality means something
        worst = max(worst, float((ref - out).abs().max()))
        assert n_params(sub) == space.params(arch)
    assert worst <= 1e-5


def test_full_size_imagenet_largest_and_smallest():
    space = create_search_space("fbnet", dataset="imagenet")
    net = randomise(space.build_supernet(), seed=2)
    assert space.resolution(space.largest()) == 224 and space.input_shape(space.largest(), 2) == (2, 3, 224, 224)
    for arch in (space.largest(), space.smallest()):
        sub = space.extract(net, arch)
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            ref, out = net(x, arch), sub(x)
        assert ref.shape == (1, 1000) and float((ref - out).abs().max()) <= 1e-5
        assert n_params(sub) == space.params(arch)
    assert space.macs(space.largest()) > 10 * space.macs(space.smallest())


def test_smallest_has_the_fewest_macs():
    space = create_search_space("fbnet", dataset="cifar100")
    low = space.macs(space.smallest())
    archs = space.sample_many(300, np.random.default_rng(0))
    assert all(space.macs(a) >= low for a in archs)
    assert max(space.macs(a) for a in archs) < space.macs(space.largest())
    # per layer the cheapest op: skip, except where a 1x1 skip conv costs more than a grouped e1 block
    for spec, op in zip(layer_specs(space.largest()), space.smallest().ops):
        costs = {o: LayerSpec(spec.index, spec.stage, spec.in_hw, spec.cin, spec.cout, spec.stride, o).macs()
                 for o in OPS}
        assert costs[op] == min(costs.values())
        assert op == "skip" if spec.shape_preserving else op in ("skip", "k3_e1_g2")
    assert "k3_e1_g2" in space.smallest().ops  # layer 13, 64 -> 112 at 8x8: 1x1 conv 459k MACs > grouped e1 397k


# --- HELP archs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def help_archs(shared_data):
    df = pd.read_csv(shared_data / "latency" / "fbnet_help.csv.gz", usecols=["arch"])
    return list(df.arch.unique())


def test_every_help_arch_parses(help_archs):
    space = create_search_space("fbnet", dataset="cifar100")
    assert len(help_archs) == 5000
    archs = [space.parse(s) for s in help_archs]
    assert len(set(archs)) == 5000 and all(a.to_string() == s for a, s in zip(archs, help_archs))
    assert all(len(space.blocks(a)) == N_LAYERS for a in archs[:50])


@pytest.mark.slow
def test_sample_of_help_archs_builds_and_runs(help_archs):
    strings = np.random.default_rng(0).choice(help_archs, 50, replace=False)
    space = create_search_space("fbnet", dataset="cifar100", n_classes=100)
    net = randomise(space.build_supernet(), seed=4)
    for s in strings:
        arch = space.parse(s)
        sub = space.extract(net, arch).eval()
        with torch.no_grad():
            y = sub(torch.randn(1, 3, 32, 32))
        assert y.shape == (1, 100) and torch.isfinite(y).all()
        assert n_params(sub) == space.params(arch)


# --- ONNX --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dataset, size", SETTINGS)
def test_onnx_parity_for_20_archs(dataset, size, tmp_path):
    space = create_search_space("fbnet", dataset=dataset, n_classes=10, in_channels=3, input_size=size)
    net = randomise(space.build_supernet(), seed=5)
    archs = [space.largest()] + space.sample_many(19, np.random.default_rng(5))
    x = torch.randn(2, 3, size, size)
    worst = 0.0
    for i, arch in enumerate(archs):
        sub = space.extract(net, arch).eval()
        path = export_onnx(sub, space.input_shape(arch, 2), tmp_path / f"{i}.onnx", exporter="legacy")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            ref = sub(x).numpy()
        worst = max(worst, float(np.abs(out - ref).max()))
        graph = onnx.load(str(path)).graph  # group-2 ops stay real grouped convs in the exported file
        groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert groups.count(2) == 2 * sum(op.endswith("_g2") for op in arch.ops)
    assert worst <= 1e-4


# --- the space ---------------------------------------------------------------------------------
def test_blocks_follow_the_input_size():
    space = create_search_space("fbnet", dataset="imagenet", input_size=224)
    keys = space.blocks(space.largest())
    assert keys[0] == "ir_hw112_cin16_cout16_e6_k5_s1_g1" and keys[-1] == "ir_hw7_cin184_cout352_e6_k5_s1_g1"
    small = create_search_space("fbnet", dataset="imagenet", input_size=64).blocks(space.smallest())
    assert small[0] == "skip_hw32_cin16_cout16_e1_k1_s1_g1" and small[-1] == "ir_hw2_cin184_cout352_e1_k3_s1_g2"
    cifar = create_search_space("fbnet", dataset="cifar100").blocks(space.largest())
    assert cifar[0].startswith("ir_hw32_") and cifar[-1].startswith("ir_hw4_")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"dataset": "mnist"}, "dataset 'mnist'"),
        ({"input_size": 0}, "input_size=0"),
        ({"input_size": 32.5}, "input_size=32.5"),
        ({"input_size": "32"}, "input_size='32'"),
        ({"n_classes": 1}, "n_classes=1"),
        ({"in_channels": -3}, "in_channels=-3"),
        ({"dropout": 1.5}, "dropout=1.5"),
    ],
)
def test_bad_space_arguments_give_one_line_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as e:
        create_search_space("fbnet", **kwargs)
    assert "\n" not in str(e.value) and "expected" in str(e.value)


def test_progressive_phases_and_genome():
    space = create_search_space("fbnet")
    rng = np.random.default_rng(0)
    allowed = [{"k3_e6", "k5_e6"}, {"k3_e1", "k3_e3", "k3_e6", "k5_e1", "k5_e3", "k5_e6"}, set(OPS)]
    for phase, ops in enumerate(allowed):
        assert all(set(space.sample_phase(rng, phase).ops) <= ops for _ in range(20))
        assert set(space.smallest_phase(phase).ops) <= ops
    assert space.smallest_phase(2) == space.smallest()
    assert space.smallest_phase(0) == FBNetArchitecture(("k3_e6",) * N_LAYERS)
    with pytest.raises(ValueError, match="phase 3"):
        space.sample_phase(rng, 3)
    a, b = space.sample_many(2, rng)
    assert space.from_genome(space.to_genome(a)) == a
    assert space.cost_features([a, b]).shape == (2, 27)
