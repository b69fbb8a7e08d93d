"""CIFAR-10 python batches read from a user's folder (``data=cifar10``, ``bench.data=cifar10``).

No CIFAR-10 ships with the project, so these tests write batches in CIFAR-10's own pickle format (dict with
b"data": uint8 rows of 3x32x32 in channel-major order, b"labels": list of ints) holding real images: the digits,
upsampled 4x and repeated over three channels, so a network can learn them.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data import load_cifar10

N_PER_BATCH = 300  # 5 training batches + 1 test batch = 1,800 > 1,797 digits: the last batch wraps around


def _digits_as_cifar() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.kron(d.images, np.ones((4, 4))) * (255.0 / 16.0)  # (n, 32, 32), 0..255
    rgb = np.stack([img, 0.8 * img, 255 - img], axis=1).astype(np.uint8)  # 3 distinct channels
    return rgb, d.target.astype(np.int64)


def write_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Six CIFAR-format batches under ``root/cifar-10-batches-py``; returns (images, labels) in file order."""
    x, y = _digits_as_cifar()
    idx = np.arange(6 * N_PER_BATCH) % len(y)
    x, y = x[idx], y[idx]
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        part = slice(k * N_PER_BATCH, (k + 1) * N_PER_BATCH)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x[part].reshape(N_PER_BATCH, -1), b"labels": y[part].tolist()}, f)
    return x, y


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("cifar")
    x, y = write_cifar10(root)
    return root, x, y


def test_reads_batches_splits_and_standardises(cifar_root):
    root, x, y = cifar_root
    data = load_cifar10(str(root), val_frac=0.1, seed=3)
    n_train = 5 * N_PER_BATCH
    assert data.name == "cifar10" and data.n_classes == 10 and data.channels == 3 and data.image_size == 32
    assert data.sizes() == {"train": n_train - 150, "val": 150, "test": N_PER_BATCH}
    # train + val are a permutation of the five training batches; the test batch keeps its order
    got = np.sort(np.concatenate([data.y_train.numpy(), data.y_val.numpy()]))
    assert (got == np.sort(y[:n_train])).all()
    assert (data.y_test.numpy() == y[n_train:]).all()
    # standardised per channel with training statistics: the training mean is 0 and std 1 per channel
    assert data.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (data.x_train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    # pixels land where CIFAR's channel-major layout puts them: the test images are an affine map of the files
    raw = torch.tensor(x[n_train:], dtype=torch.float32)
    for c in range(3):
        a, b = data.x_test[:, c].flatten(), raw[:, c].flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999  # float32 rounding: 0.9999 measured
    # the three written channels differ (the third is inverted), so a channel swap would break this
    assert torch.corrcoef(torch.stack([data.x_test[:, 0].flatten(), data.x_test[:, 2].flatten()]))[0, 1] < -0.99


def test_limit_and_the_plain_folder(cifar_root):
    root, _, y = cifar_root
    data = load_cifar10(str(root / "cifar-10-batches-py"), val_frac=0.2, limit=500)  # the folder itself works too
    assert data.sizes() == {"train": 400, "val": 100, "test": 100}
    assert (data.y_test.numpy() == y[5 * N_PER_BATCH : 5 * N_PER_BATCH + 100]).all()


def test_missing_batches_are_named(tmp_path, cifar_root):
    root, _, _ = cifar_root
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "data_batch_1").write_bytes((root / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    with pytest.raises(ValueError, match="lacks.*data_batch_2.*test_batch"):
        load_cifar10(str(partial))
    with pytest.raises(ValueError, match="data.root is empty"):
        load_cifar10("")


@pytest.mark.slow
def test_supernet_ranking_bench_runs_on_cifar10_batches(tmp_path, cifar_root):
    root, _, _ = cifar_root
    out = tmp_path / "sr.json"
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", "bench=supernet_ranking", "bench.data=cifar10",
                           f"bench.data_root={root}", "bench.data_limit=1000", "bench.n_archs=3", "bench.epochs=2",
                           "bench.standalone_seeds=1", "bench.threads=1", "bench.calib_images=256",
                           f"bench.out={out}", f"hydra.run.dir={tmp_path / 'h'}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["data"] == "cifar10" and res["n_archs"] == 3
    assert res["holdout_images"] == 100 + 200  # 10% of the 1,000 training images + 1,000 // 5 test images
    for r in res["archs"]:
        assert r["standalone_acc"] > 0.3 and r["inherited_acc"] > 0.2  # learnt, well above chance (0.1)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_batch_that_would_run_code_is_refused_unread(tmp_path):
    """CIFAR-10's batches are pickles: the reader resolves only arrays, lists and bytes, never other globals."""
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(batch, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _RunsCode(tmp_path / "ran")}, f)
    with pytest.raises(ValueError, match="data_batch_2' cannot be read .*pathlib.*is not allowed") as e:
        load_cifar10(str(tmp_path / "cifar-10-batches-py"))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ran").exists()
