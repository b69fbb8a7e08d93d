"""bench=supernet_overhead: train-step time of the dynamic supernet running a subnet vs that subnet extracted.

Same batch, same threads, same optimizer step (SGD over the parameters each model actually uses). For each of
``bench.n_archs`` random archs: warm-up steps, then ``bench.steps`` timed steps of each model in alternation;
ratio = median supernet step / median static step. Output ``ratio_median`` (target <= 1.3).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas.bench.config import bench_config
from nas.rundir import write_json_atomic
from search_spaces import create_search_space

SETTINGS = {  # space -> (constructor kwargs, batch, channels)
    "ofa_mbv3_small": ({"name": "ofa_mbv3", "setting": "small", "n_classes": 10, "in_channels": 1}, 64, 1),
    "ofa_mbv3_imagenet": ({"name": "ofa_mbv3", "setting": "imagenet", "n_classes": 1000, "in_channels": 3}, 8, 3),
    "fbnet_cifar100": ({"name": "fbnet", "dataset": "cifar100", "n_classes": 100, "in_channels": 3}, 32, 3),
    "fbnet_imagenet": ({"name": "fbnet", "dataset": "imagenet", "n_classes": 1000, "in_channels": 3}, 8, 3),
}


def _step_time(model, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer, arch: Any = None) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out = model(x, arch) if arch is not None else model(x)
    F.cross_entropy(out, y).backward()
    opt.step()
    return time.perf_counter() - t0


def run(cfg: Any) -> dict:
    cfg = bench_config("supernet_overhead", cfg)
    spaces = list(cfg.spaces)
    bad = [s for s in spaces if s not in SETTINGS]
    if bad:
        raise ValueError(f"bench.spaces contains {bad[0]!r}; expected names from {sorted(SETTINGS)}")
    if int(cfg.n_archs) < 1 or int(cfg.steps) < 1:
        raise ValueError(f"bench.n_archs={cfg.n_archs}, bench.steps={cfg.steps}; expected positive integers")
    torch.set_num_threads(int(cfg.threads))
    result: dict[str, Any] = {"bench": "supernet_overhead", "threads": int(cfg.threads), "spaces": {}}
    for name in spaces:
        kw, batch, ch = SETTINGS[name]
        space = create_search_space(**kw)
        net = space.build_supernet().to(memory_format=torch.channels_last).train()
        rng = np.random.default_rng(int(cfg.seed))
        ratios, rows = [], []
        for arch in tqdm(space.sample_many(int(cfg.n_archs), rng), desc=f"supernet_overhead {name}", unit="arch"):
            sub = space.extract(net, arch).to(memory_format=torch.channels_last).train()
            r = space.resolution(arch)
            x = torch.randn(batch, ch, r, r).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, space.n_classes, (batch,))
            opt_super = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
            opt_sub = torch.optim.SGD(sub.parameters(), lr=1e-4, momentum=0.9)
            for _ in range(int(cfg.warmup)):
                _step_time(net, x, y, opt_super, arch)
                _step_time(sub, x, y, opt_sub)
            t_super, t_sub = [], []
            for _ in range(int(cfg.steps)):
                t_super.append(_step_time(net, x, y, opt_super, arch))
                t_sub.append(_step_time(sub, x, y, opt_sub))
            r = float(np.median(t_super) / np.median(t_sub))
            ratios.append(r)
            rows.append({"arch": arch.to_string(), "supernet_ms": 1e3 * float(np.median(t_super)),
                         "static_ms": 1e3 * float(np.median(t_sub)), "ratio": r})
        result["spaces"][name] = {"ratio_median": float(np.median(ratios)), "ratio_max": float(np.max(ratios)),
                                  "batch": batch, "n_archs": len(rows), "archs": rows}
    result["ratio_median"] = float(np.median([v["ratio_median"] for v in result["spaces"].values()]))
    write_json_atomic(Path(cfg.out), result)
    for name, v in result["spaces"].items():
        print(f"{name:<20} ratio_median {v['ratio_median']:.3f}  max {v['ratio_max']:.3f}  (batch {v['batch']})")
    return result
