"""IDX (Fashion-MNIST, MNIST) and image-folder loaders: the real Fashion-MNIST files where Debian's package put
them (CI installs it), small files in every accepted format written here, and each bad-path error."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data import (
    FASHION_MNIST_ROOT,
    IDX_FILES,
    load_fashion_mnist,
    load_image_folder,
    load_mnist,
    read_idx,
)

REAL = Path(FASHION_MNIST_ROOT)
needs_real = pytest.mark.skipif(
    not all((REAL / f"{s}.gz").is_file() for s in IDX_FILES),
    reason=f"Fashion-MNIST not found in {REAL}: apt-get install dataset-fashion-mnist (CI installs it)",
)


# ------------------------------------------------------------------------------------------ real files
@needs_real
def test_real_fashion_mnist_splits_and_normalisation():
    data = load_fashion_mnist(val_frac=0.1, seed=0)
    assert data.name == "fashion_mnist" and data.n_classes == 10 and data.channels == 1 and data.image_size == 28
    assert data.sizes() == {"train": 54_000, "val": 6_000, "test": 10_000}
    assert np.bincount(data.y_test.numpy(), minlength=10).tolist() == [1000] * 10  # the official test set
    assert np.bincount(np.r_[data.y_train.numpy(), data.y_val.numpy()], minlength=10).tolist() == [6000] * 10
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std()) - 1) < 1e-3
    again = load_fashion_mnist(val_frac=0.1, seed=0, limit=None)
    assert torch.equal(again.y_val, data.y_val) and torch.equal(again.x_val[:5], data.x_val[:5])  # deterministic
    other = load_fashion_mnist(val_frac=0.1, seed=1)
    assert not torch.equal(other.y_val, data.y_val)
    first = load_fashion_mnist(limit=1000)
    assert first.sizes() == {"train": 900, "val": 100, "test": 10_000}
    quick = load_fashion_mnist(limit=1000, test_limit=500)
    assert quick.sizes()["test"] == 500 and torch.equal(quick.y_test, data.y_test[:500])


# --------------------------------------------------------------------------------------- written files
def _idx_bytes(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def _write_idx(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, dotted: bool = False,
               seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {IDX_FILES[0]: rng.integers(0, 256, (n_train, 12, 12)), IDX_FILES[1]: np.arange(n_train) % 10,
              IDX_FILES[2]: rng.integers(0, 256, (n_test, 12, 12)), IDX_FILES[3]: np.arange(n_test)[::-1] % 10}
    root.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        raw = _idx_bytes(a)
        (root / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True), (True, True)])
def test_written_idx_files_in_each_format(tmp_path, gz, dotted):
    arrays = _write_idx(tmp_path / "d", gz=gz, dotted=dotted)
    data = load_mnist(str(tmp_path / "d"), val_frac=0.25, seed=2)
    assert data.name == "mnist" and data.sizes() == {"train": 45, "val": 15, "test": 20}
    assert (data.y_test.numpy() == arrays[IDX_FILES[3]]).all()  # test = the t10k files, in file order
    assert sorted(np.r_[data.y_train.numpy(), data.y_val.numpy()]) == sorted(arrays[IDX_FILES[1]])
    # pixels: an affine map of the file's bytes (standardised with the training statistics)
    a, b = data.x_test.flatten(), torch.tensor(arrays[IDX_FILES[2]], dtype=torch.float32).flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9999
    assert read_idx(next((tmp_path / "d").glob("*t10k-images*"))).shape == (20, 12, 12)


def test_idx_limit_keeps_the_first_training_images(tmp_path):
    arrays = _write_idx(tmp_path / "d", n_train=80)
    data = load_fashion_mnist(str(tmp_path / "d"), val_frac=0.5, limit=30)
    assert data.sizes() == {"train": 15, "val": 15, "test": 20}
    assert sorted(np.r_[data.y_train.numpy(), data.y_val.numpy()]) == sorted(arrays[IDX_FILES[1]][:30])


def test_idx_bad_paths_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="lacks .*train-images-idx3-ubyte.*t10k-labels-idx1-ubyte"):
        load_fashion_mnist(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="data.root is empty"):
        load_mnist("")
    _write_idx(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"lacks \['t10k-labels-idx1-ubyte'\]") as e:
        load_mnist(str(tmp_path / "d"))
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad"
    _write_idx(bad, gz=False)
    img = bad / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(str(bad))
    img.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        load_mnist(str(bad))
    img.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="damaged gzip"):
        load_mnist(str(bad))
    _write_idx(bad, gz=False)
    lab = bad / "train-labels-idx1-ubyte"
    lab.write_bytes(_idx_bytes(np.arange(59) % 10))
    with pytest.raises(ValueError, match=r"images \(60, 12, 12\) and labels \(59,\)"):
        load_mnist(str(bad))
    with pytest.raises(ValueError, match="limit=1 is invalid"):
        load_mnist(str(tmp_path / "d"), limit=1)


# -------------------------------------------------------------------------------------------- folders
def _write_folder(root: Path, classes=("cat", "dog", "eel"), n: int = 6, size: int = 10) -> None:
    from PIL import Image

    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(n):
            px = np.full((size, size, 3), 40 * k + i, dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")


def test_image_folder_with_and_without_a_test_tree(tmp_path):
    _write_folder(tmp_path / "flat")
    data = load_image_folder(str(tmp_path / "flat"), image_size=8, channels=3, val_frac=0.25, test_frac=0.25)
    assert data.name == "image_folder" and data.n_classes == 3 and data.channels == 3 and data.image_size == 8
    assert sum(data.sizes().values()) == 18 and data.sizes()["test"] == 4 and data.sizes()["val"] == 4
    # the class index follows the sorted folder names, and pixel brightness follows the class
    x = torch.cat([data.x_train, data.x_val, data.x_test]).mean(dim=(1, 2, 3))
    y = torch.cat([data.y_train, data.y_val, data.y_test])
    assert float(x[y == 0].max()) < float(x[y == 1].min()) and float(x[y == 1].max()) < float(x[y == 2].min())
    _write_folder(tmp_path / "split" / "train")
    _write_folder(tmp_path / "split" / "test", n=2)
    grey = load_image_folder(str(tmp_path / "split"), image_size=8, channels=1, val_frac=0.5)
    assert grey.channels == 1 and grey.sizes() == {"train": 9, "val": 9, "test": 6}
    assert grey.y_test.tolist() == [0, 0, 1, 1, 2, 2]


def test_image_folder_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(str(tmp_path / "nowhere"))
    _write_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(ValueError, match="has 1 class folders"):
        load_image_folder(str(tmp_path / "one"))
    _write_folder(tmp_path / "s" / "train")
    _write_folder(tmp_path / "s" / "test", classes=("cat", "dog"))
    with pytest.raises(ValueError, match="expected the training classes"):
        load_image_folder(str(tmp_path / "s"))
    _write_folder(tmp_path / "broken")
    (tmp_path / "broken" / "dog" / "x.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="x.png' cannot be read"):
        load_image_folder(str(tmp_path / "broken"))
    with pytest.raises(ValueError, match="channels=2"):
        load_image_folder(str(tmp_path / "broken"), channels=2)


def test_cli_names_the_missing_idx_files_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.cli", f"hydra.run.dir={tmp_path / 'run'}", "data=fashion_mnist",
                           f"data.root={tmp_path / 'none'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "lacks" in lines[0] and "train-images-idx3-ubyte" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
