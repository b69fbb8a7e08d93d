"""bench=ofa_import: what evaluating one ImageNet-setting subnet of a published Once-for-All supernet costs here.

The evaluation is the pipeline's own (``nas.training.subnet_accuracy`` on ``data=image_folder
eval_transform=ofa normalize=imagenet``, BN recalibration ``calib_mode=ofa``): extract the subnet, recalibrate
BatchNorm on ``calib_images`` training images in batches of ``calib_batch``, score ``val_images`` validation
images, every image decoded from its file and resized/cropped for the subnet's resolution. Without
``bench.image_root`` the images are synthetic JPEGs of ImageNet's typical size (500x375, random content): the cost
is the same, the accuracy meaningless. The supernet has random weights (the published files are not shipped);
its cost equals the published one's. Each subnet is evaluated twice: ``first_s`` decodes the images at its
resolution, ``cached_s`` reuses them (another subnet at the same resolution).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.bench.config import as_dict, bench_config, load_average
from nas.data import load_image_folder
from nas.rundir import write_json_atomic
from nas.training import subnet_accuracy
from search_spaces import create_search_space


def synthetic_jpegs(root: Path, n_train: int, n_val: int, classes: int = 10, seed: int = 0) -> Path:
    """``train/<class>`` and ``val/<class>`` trees of random 500x375 JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = max(2, min(classes, n_train, n_val))  # every class folder in both trees
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            d = root / split / f"c{i % classes:02d}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def run(cfg: Any) -> dict:
    cfg = bench_config("ofa_import", cfg)
    torch.set_num_threads(int(cfg.threads))
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000, in_channels=3,
                                width_mult=float(cfg.width_mult))
    archs = [space.largest() if a == "largest" else space.smallest() if a == "smallest" else space.parse(a)
             for a in cfg.archs]
    with tempfile.TemporaryDirectory() as tmp:
        n_train = int(cfg.calib_images) + max(1, round(0.01 * int(cfg.calib_images)) + 1)  # val_frac 0.01 carved off
        root = Path(cfg.image_root).expanduser() if cfg.image_root else synthetic_jpegs(
            Path(tmp), n_train, int(cfg.val_images), seed=int(cfg.seed))
        t0 = time.perf_counter()
        # test_frac is unused with a val/ tree; val_frac carves a few training images off (not used here)
        data = load_image_folder(str(root), image_size=224, eval_transform="ofa", normalize="imagenet",
                                 val_frac=0.01, seed=int(cfg.seed))
        load_s = time.perf_counter() - t0
        torch.manual_seed(int(cfg.seed))
        net = space.build_supernet().eval()
        rows = []
        for arch in archs:
            kw = {"calib_images": int(cfg.calib_images), "calib_batch": int(cfg.calib_batch), "calib_mode": "ofa",
                  "n_eval": int(cfg.val_images)}
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                subnet_accuracy(space, net, arch, data, "test", **kw)  # test = the val/ tree's images
                times.append(time.perf_counter() - t0)
            rows.append({"arch": arch.to_string(), "r": arch.r, "macs_m": space.macs(arch) / 1e6,
                         "first_s": times[0], "cached_s": times[1]})
            print(f"r={arch.r} {space.macs(arch) / 1e6:.0f} MMACs: {times[0]:.1f} s with decoding, "
                  f"{times[1]:.1f} s with the images cached")
    result = {"bench": "ofa_import", "config": as_dict(cfg), "load_seconds": load_s, "subnets": rows,
              "n_calib": min(int(cfg.calib_images), len(data.y_train)), "n_val": min(int(cfg.val_images), len(data.y_test)),
              "torch_threads": torch.get_num_threads(), "load_average": load_average(), "cpus": os.cpu_count()}
    write_json_atomic(Path(cfg.out), result)
    return result
