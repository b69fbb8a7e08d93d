"""Supernet training: exact mid-epoch resume, pausing, progressive shrinking, AMP modes, torchrun DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data import load_digits
from nas.training import (
    TrainConfig,
    TrainingPaused,
    amp_dtype,
    phase_boundaries,
    subnet_accuracy,
    train_supernet,
)
from search_spaces import create_search_space


def small_space():
    return create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 20])


def small_data(n: int = 192):
    data = load_digits()
    data.x_train, data.y_train = data.x_train[:n], data.y_train[:n]
    return data


def fresh_supernet(space, seed: int = 0):
    torch.manual_seed(seed)
    return space.build_supernet()


def test_mid_epoch_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    space, data = small_space(), small_data()
    base = dict(epochs=2, batch_size=32, n_random=1, threads=1, checkpoint_every_s=0)
    ref = fresh_supernet(space)
    ref_res = train_supernet(ref, space, data, TrainConfig(**base))

    ckpt = tmp_path / "partial.pt"
    with pytest.raises(TrainingPaused, match="epoch 1, step 4/6"):
        train_supernet(fresh_supernet(space), space, data,
                       TrainConfig(**base, checkpoint_every_steps=3, stop_after_steps=4), checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert (state["epoch"], state["step"], state["world_size"]) == (0, 4, 1)
    # a different initialisation proves the weights come from the checkpoint
    res = train_supernet(fresh_supernet(space, seed=123), space, data, TrainConfig(**base), checkpoint=ckpt)
    final = torch.load(ckpt, weights_only=False)
    assert (final["epoch"], final["step"]) == (2, 0)
    diffs = [float((a - b).abs().max()) for a, b in zip(ref.state_dict().values(), final["model"].values())
             if a.dtype.is_floating_point]
    assert max(diffs) <= 1e-5
    assert [h["loss"] for h in res["history"]] == pytest.approx([h["loss"] for h in ref_res["history"]], rel=1e-5)


def test_progressive_shrinking_phases_restrict_the_sampled_subnets(tmp_path):
    space = small_space()
    rng = np.random.default_rng(0)
    kernel_phase = [space.sample_phase(rng, 0) for _ in range(50)]
    assert all(set(a.e) == {6} and set(a.d) == {4} for a in kernel_phase)
    assert {k for a in kernel_phase for k in a.ks} == {3, 5, 7}
    depth_phase = [space.sample_phase(rng, 1) for _ in range(50)]
    assert {d for a in depth_phase for d in a.d} == {2, 3, 4}
    active_e = {a.e[s * 4 + i] for a in depth_phase for s in range(5) for i in range(a.d[s])}
    assert active_e == {6}  # inactive layers hold the canonical smallest choice
    assert {e for a in (space.sample_phase(rng, 2) for _ in range(50)) for e in a.e} == {3, 4, 6}
    assert space.smallest_phase(0).d == (4,) * 5 and space.smallest_phase(2) == space.smallest()
    with pytest.raises(ValueError, match="phase 3"):
        space.sample_phase(rng, 3)
    cfg = TrainConfig(epochs=10, progressive=True, progressive_fractions=[0.2, 0.3, 0.5])
    assert phase_boundaries(cfg, 3) == [0, 2, 5]
    with pytest.raises(ValueError, match="2 shares; expected 3"):
        phase_boundaries(TrainConfig(epochs=10, progressive=True, progressive_fractions=[0.5, 0.5]), 3)
    data = small_data(64)
    res = train_supernet(space.build_supernet(), space, data,
                         TrainConfig(epochs=3, batch_size=32, n_random=1, threads=1, progressive=True))
    assert len(res["history"]) == 3 and np.isfinite([h["loss"] for h in res["history"]]).all()


def test_amp_modes():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        amp_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="train.amp='fast'"):
        TrainConfig(amp="fast")
    space, data = small_space(), small_data(64)
    net = space.build_supernet()
    res = train_supernet(net, space, data, TrainConfig(epochs=1, batch_size=32, n_random=1, threads=1, amp="bf16"))
    assert res["amp"] == "bfloat16" and np.isfinite(res["history"][0]["loss"])
    assert all(p.dtype == torch.float32 for p in net.parameters())  # autocast, weights stay fp32


_COLLECTIVES_SCRIPT = """
import sys, torch
import torch.distributed as tdist
from nas.distributed import allreduce_gradients, average_buffers, broadcast_module, init_from_env

ctx = init_from_env("cpu")
torch.manual_seed(100 + ctx.rank)  # different initial weights per rank, as when ranks build independently
net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
net.register_buffer("stat", torch.zeros(4))
broadcast_module(net, ctx)
net.stat.fill_(ctx.rank + 1.0)  # running statistics drift apart per rank during training
gen = torch.Generator().manual_seed(0)
x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
half = slice(ctx.rank * 8, (ctx.rank + 1) * 8)
torch.nn.functional.cross_entropy(net(x[half]), y[half]).backward()
params = list(net.parameters())
allreduce_gradients(params, ctx)
average_buffers(net, ctx)
torch.save({"params": [p.detach().clone() for p in params], "grads": [p.grad.clone() for p in params],
            "stat": net.stat.clone()}, f"{sys.argv[1]}.{ctx.rank}")
tdist.destroy_process_group()
"""


def test_collectives_give_rank0_weights_full_batch_gradients_and_mean_buffers(tmp_path):
    """Two gloo processes under torchrun: weights start as rank 0's, the averaged half-batch gradients equal
    the full-batch gradient of one process, and BN-style buffers are averaged (what makes a torchrun step a
    1-process step up to BatchNorm's per-rank batch statistics)."""
    script = tmp_path / "collectives.py"
    script.write_text(_COLLECTIVES_SCRIPT)
    out = str(tmp_path / "rank")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), out], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = [torch.load(f"{out}.{r}") for r in range(2)]
    torch.manual_seed(100)  # rank 0's initial weights
    ref = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    for r in range(2):
        for p, q in zip(got[r]["params"], ref.parameters(), strict=True):
            assert torch.equal(p, q.detach())
        for g, q in zip(got[r]["grads"], ref.parameters(), strict=True):
            assert torch.allclose(g, q.grad, atol=1e-6), (g - q.grad).abs().max()
        assert torch.equal(got[r]["stat"], torch.full((4,), 1.5))


def _hwnas(args: list[str], nproc: int, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "nas.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "nas.cli", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_torchrun_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
    """gloo on CPU: a 2-process job pauses mid-epoch, resumes, and its subnets match a 1-process run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", "TQDM_DISABLE": "1"}
    common = ["experiment=smoke", "stages=[train]", "threads=1", "train.epochs=3", "train.batch_size=64",
              "train.checkpoint_every_s=0", "search_space.resolutions=[16,20]"]
    runs = {}
    for nproc in (1, 2):
        run_dir = tmp_path / f"np{nproc}"
        args = [*common, f"run_dir={run_dir}", f"hydra.run.dir={run_dir}"]
        if nproc == 2:
            paused = _hwnas([*args, "train.stop_after_steps=20", "train.checkpoint_every_steps=5"], 2, env, tmp_path)
            assert paused.returncode != 0 and "rerun the same command" in paused.stderr, paused.stderr[-2000:]
            state = torch.load(run_dir / "checkpoints" / "supernet.partial.pt", weights_only=False)
            steps_per_epoch = len(load_digits().y_train) // 64
            assert (state["world_size"], state["epoch"], state["step"]) == (2, 1, 20 - steps_per_epoch)
            assert not (run_dir / "stages" / "train.json").exists()
        done = _hwnas(args, nproc, env, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[nproc] = run_dir
    one = torch.load(runs[1] / "checkpoints" / "supernet.pt", weights_only=False)
    two = torch.load(runs[2] / "checkpoints" / "supernet.pt", weights_only=False)
    assert set(one) == set(two) and set(one["model"]) == set(two["model"])  # same checkpoint format
    assert (one["epoch"], two["epoch"], two["world_size"]) == (3, 3, 2)
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 20])
    data = load_digits()
    archs = [space.largest(), space.smallest()] + space.sample_many(10, np.random.default_rng(7))
    accs = {}
    for k, state in ((1, one), (2, two)):
        net = space.build_supernet()
        net.load_state_dict(state["model"])
        accs[k] = np.array([subnet_accuracy(space, net, a, data, "test") for a in archs])
    assert accs[1].mean() > 0.85 and accs[2].mean() > 0.85, accs
    # "Within noise": 3-epoch runs are not bit-reproducible across CPUs (the same seed gives different means on
    # different machines); the 12-subnet means of 1 and 2 processes differed by 0.035 and 0.052 in two CI runs
    # (one training run against another, so the subnets' errors move together). Exactness of the collectives
    # is tested above; this bound catches a 2-process job that trains markedly worse.
    assert abs(accs[1].mean() - accs[2].mean()) <= 0.08, accs



@pytest.mark.parametrize("space_name, kwargs", [("ofa_mbv3", {"setting": "small"}), ("fbnet", {"dataset": "cifar100", "input_size": 32})])
def test_folded_batchnorm_gives_the_recalibrated_subnets_outputs(space_name: str, kwargs: dict) -> None:
    from torch import nn

    from nas.training import fold_batchnorm, recalibrate_bn

    space = create_search_space(space_name, n_classes=10, in_channels=1, **kwargs)
    net = fresh_supernet(space)
    data = small_data()
    rng = np.random.default_rng(0)
    for arch in [space.largest(), *space.sample_many(3, rng)]:
        r = space.resolution(arch)
        sub = space.extract(net, arch)
        recalibrate_bn(sub, data.x_train[:128], r)
        x = torch.nn.functional.interpolate(data.x_val[:16], size=(r, r), mode="bilinear", align_corners=False)
        ref = sub.eval()(x)
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in sub.modules())
        folded = fold_batchnorm(sub)
        left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert left < n_bn / 2, f"only {n_bn - left} of {n_bn} BatchNorms were folded"
        torch.testing.assert_close(folded(x), ref, rtol=1e-4, atol=1e-4)
