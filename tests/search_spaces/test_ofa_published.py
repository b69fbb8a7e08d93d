"""Once-for-All's published supernets against the reference implementation (PyPI ``ofa``): the importer, kernel
transformation matrices, width multiplier, extraction, BN recalibration and the accuracy predictor."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.training import recalibrate_bn
from predictors.ofa_accuracy import OFAAccuracyPredictor
from search_spaces import OFAArchitecture, create_search_space
from search_spaces.ofa_mbv3.published import convert_state, import_supernet, read_state

sys.path.insert(0, str(Path(__file__).parent))
from ofa_reference import ofa_modules, old_naming, reference_supernet  # noqa: E402

RESOLUTIONS = (128, 160, 192, 224, 172)  # the 4-step grid's corners and one resolution off the 16-step grid


def space_of(width_mult: float, kernel_transform: bool = True):
    return create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000, in_channels=3,
                               width_mult=width_mult, kernel_transform=kernel_transform)


def archs_to_check(space) -> list[OFAArchitecture]:
    rng = np.random.default_rng(7)
    out = [space.largest(), space.smallest()]
    out += [OFAArchitecture(a.ks, a.e, a.d, RESOLUTIONS[i % len(RESOLUTIONS)]).canonical()
            for i, a in enumerate(space.sample(rng) for _ in range(10))]
    return out


def set_active(ref: torch.nn.Module, arch: OFAArchitecture) -> None:
    ref.set_active_subnet(ks=list(arch.ks), e=list(arch.e), d=list(arch.d))


@pytest.fixture(scope="module", params=[1.0, 1.2], ids=["w1.0", "w1.2"])
def published(request, tmp_path_factory):
    """(width, reference supernet, our supernet imported from the reference's file in the published naming,
    path of that file)."""
    wm = request.param
    ref = reference_supernet(wm, seed=int(wm * 10))
    path = tmp_path_factory.mktemp("published") / f"ofa_mbv3_d234_e346_k357_w{wm}"
    torch.save({"state_dict": old_naming(ref.state_dict())}, path)
    return wm, ref, import_supernet(path, space_of(wm)), path


def test_import_matches_reference_forward_and_extraction(published):
    wm, ref, ours, _ = published
    space = space_of(wm)
    worst = worst_static = 0.0
    for arch in archs_to_check(space):
        x = torch.randn(2, 3, arch.r, arch.r, generator=torch.Generator().manual_seed(arch.r))
        set_active(ref, arch)
        with torch.no_grad():
            want = ref(x)
            got = ours(x, arch)
            ref_sub = ref.get_active_subnet(preserve_weight=True).eval()
            sub = space.extract(ours, arch).eval()
            want_static, got_static = ref_sub(x), sub(x)
        scale = float(want.abs().max())
        worst = max(worst, float((got - want).abs().max()) / scale)
        worst_static = max(worst_static, float((got_static - want_static).abs().max()) / scale)
        n_ours = sum(p.numel() for p in sub.parameters())
        assert n_ours == sum(p.numel() for p in ref_sub.parameters()) == space.params(arch), arch
    assert worst <= 1e-5 and worst_static <= 1e-5, (worst, worst_static)


def test_current_key_names_import_the_same_tensors(published, tmp_path):
    wm, ref, ours, _ = published
    path = tmp_path / "current_names.pth"
    torch.save({"state_dict": ref.state_dict()}, path)  # the ofa package's present names (blocks.N.conv...)
    again = import_supernet(path, space_of(wm))
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_centre_crop_kernels_fail_the_parity_bound():
    """Negative control: the same weights without the transformation matrices compute another function."""
    ref = reference_supernet(1.0, seed=3)
    space = space_of(1.0, kernel_transform=False)
    net = space.build_supernet().eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("_matrix")}
    net.load_state_dict(convert_state(state, net.state_dict()))
    arch = OFAArchitecture.smallest(160)
    x = torch.randn(2, 3, 160, 160)
    set_active(ref, arch)
    with torch.no_grad():
        want, got = ref(x), net(x, arch)
    assert float((got - want).abs().max()) / float(want.abs().max()) > 1e-3


def test_identity_matrices_reduce_to_centre_crop_and_old_checkpoints_load(caplog):
    space = space_of(1.0)
    with_t = space.build_supernet().eval()
    state = {k: v for k, v in with_t.state_dict().items() if ".kernel_transforms." not in k}
    plain = space_of(1.0, kernel_transform=False).build_supernet().eval()
    plain.load_state_dict(state)
    fresh = space.build_supernet().eval()
    with caplog.at_level("WARNING"):
        fresh.load_state_dict(state)  # a checkpoint written before kernel transforms existed
    assert "predates kernel transforms: 40 identity matrices" in caplog.text
    arch = OFAArchitecture.smallest(128)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(plain(x, arch), fresh(x, arch), atol=1e-6, rtol=1e-5)


def test_width_multiplier_widths_follow_ofa():
    w = space_of(1.2).widths
    assert (w.stem, w.stages, w.final_expand, w.last) == (24, (32, 48, 96, 136, 192), 1152, 1536)
    ref = reference_supernet(1.2, identity_transforms=True)
    net = space_of(1.2).build_supernet()
    n_matrices = sum(p.numel() for k, p in net.named_parameters() if ".kernel_transforms." in k)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    assert n_matrices == 20 * (25 * 25 + 9 * 9)


@pytest.mark.parametrize("damage, fragment", [
    ("width", r"has shape \[16, 3, 3, 3\]; expected \[24, 3, 3, 3\] for width_mult=1.2"),
    ("missing", "checkpoint lacks 'blocks.7.conv.depth_conv.conv.7to5_matrix'"),
    ("extra", "checkpoint key 'blocks.21.mobile_inverted_conv.point_linear.conv.conv.weight' has no counterpart"),
    ("truncated", "cannot be read as weights"),
    ("code", "needs code to load, which is refused"),
])
def test_importer_refuses_bad_files_in_one_line(damage, fragment, tmp_path):
    ref = reference_supernet(1.0, identity_transforms=True)
    state = old_naming(ref.state_dict())
    path, space, marker = tmp_path / "bad.pth", space_of(1.0), tmp_path / "ran"
    if damage == "width":
        space = space_of(1.2)
        torch.save({"state_dict": state}, path)
    elif damage == "missing":
        state.pop("blocks.7.mobile_inverted_conv.depth_conv.conv.7to5_matrix")
        torch.save({"state_dict": state}, path)
    elif damage == "extra":
        state["blocks.21.mobile_inverted_conv.point_linear.conv.conv.weight"] = torch.zeros(1)
        torch.save({"state_dict": state}, path)
    elif damage == "truncated":
        torch.save({"state_dict": state}, path)
        path.write_bytes(path.read_bytes()[: 100_000])
    else:
        torch.save({"state_dict": state, "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match=fragment) as e:
        import_supernet(path, space)
    assert "\n" not in str(e.value)
    assert not marker.exists()  # the pickled payload's code never ran


class _RunsCode:
    """An object whose unpickling would create ``marker`` (a stand-in for os.system in a malicious file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bn_recalibration_matches_set_running_statistics():
    ofa = ofa_modules()
    ref = reference_supernet(1.0, seed=5)
    arch = space_of(1.0).sample(np.random.default_rng(1))
    set_active(ref, arch)
    ref_sub = ref.get_active_subnet(preserve_weight=True)
    ours = import_supernet_from(ref)
    sub = space_of(1.0).extract(ours, arch)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, arch.r, arch.r, generator=g) * 0.5
    batches = [(x[i : i + 20], None) for i in range(0, 50, 20)]  # 20, 20, 10: unequal batches weigh in
    ofa.set_running_statistics(ref_sub, batches)
    recalibrate_bn(sub, x, arch.r, batch_size=20, mode="ofa")
    ref_bns = [m for m in ref_sub.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    our_bns = [m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(ref_bns) == len(our_bns)
    rel = lambda a, b: float((a - b).abs().max() / a.abs().max())  # noqa: E731 - per layer, relative to its scale
    worst = max(max(rel(a.running_mean, b.running_mean), rel(a.running_var, b.running_var))
                for a, b in zip(ref_bns, our_bns))
    assert worst <= 1e-5, worst
    recalibrate_bn(sub, x, arch.r, batch_size=20, mode="exact")  # torch's unbiased, equally weighted estimate
    differs = max(rel(a.running_var, b.running_var) for a, b in zip(ref_bns, our_bns))
    assert differs > 1e-3


def import_supernet_from(ref: torch.nn.Module) -> torch.nn.Module:
    net = space_of(1.0).build_supernet()
    net.load_state_dict(convert_state(ref.state_dict(), net.state_dict()))
    return net


def test_accuracy_predictor_matches_reference(tmp_path):
    ofa = ofa_modules()
    resolutions = list(range(128, 225, 4))
    enc = ofa.MobileNetArchEncoder(image_size_list=resolutions, ks_list=[3, 5, 7], expand_list=[3, 4, 6],
                                   depth_list=[2, 3, 4])
    torch.manual_seed(0)
    ref = ofa.AccuracyPredictor(enc, device="cpu")
    with torch.no_grad():
        ref.base_acc.fill_(0.75)
    torch.save(ref.state_dict(), tmp_path / "acc.pth")
    ours = OFAAccuracyPredictor.from_checkpoint(tmp_path / "acc.pth")
    archs = space_of(1.0).sample_many(150, np.random.default_rng(0))
    with torch.no_grad():
        want = ref.predict_acc([{"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "image_size": a.r}
                                for a in archs]).numpy()
    assert np.abs(ours.predict(archs) - want).max() <= 1e-6
    saved = OFAAccuracyPredictor.load(ours.save(tmp_path / "accuracy.npz"))  # data-only round trip
    assert np.array_equal(saved.predict(archs), ours.predict(archs))


def test_tutorial_accuracy_predictor_matches_reference(tmp_path):
    ofa_modules()
    spec = importlib.util.find_spec("ofa")
    # the tutorial package's __init__ pulls torchvision; its accuracy_predictor module alone does not
    path = Path(spec.submodule_search_locations[0]) / "tutorial" / "accuracy_predictor.py"
    mod_spec = importlib.util.spec_from_file_location("ofa_tutorial_accuracy_predictor", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    torch.manual_seed(1)
    ref = mod.AccuracyPredictor(pretrained=False, device="cpu")
    torch.save(ref.model.state_dict(), tmp_path / "acc_predictor.pth")
    ours = OFAAccuracyPredictor.from_checkpoint(tmp_path / "acc_predictor.pth")
    archs = space_of(1.0).sample_many(120, np.random.default_rng(1))
    want = ref.predict_accuracy([{"ks": list(a.ks), "e": list(a.e), "d": list(a.d), "r": [a.r]}
                                 for a in archs]).numpy().ravel()
    assert np.abs(ours.predict(archs) - want).max() <= 1e-6


def test_ofa_eval_transform_resizes_then_centre_crops(tmp_path):
    from PIL import Image

    from nas.image_eval import resize_crop

    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    r = 160
    side = math.ceil(r / 0.875)  # 183: shorter side; longer side int(183 * 400 / 300) = 244
    want = np.asarray(Image.fromarray(img).resize((244, side), Image.BILINEAR))
    top, left = round((side - r) / 2), round((244 - r) / 2)
    assert np.array_equal(resize_crop(tmp_path / "a.png", r, "RGB"), want[top : top + r, left : left + r])


def test_read_state_accepts_a_bare_state_dict(tmp_path):
    torch.save({"a": torch.zeros(2)}, tmp_path / "bare.pth")
    assert set(read_state(tmp_path / "bare.pth")) == {"a"}
