"""Datasets as in-memory tensors with a fixed train/val/test split.

``digits`` ships inside scikit-learn (1,797 real 8x8 images), so the default run downloads nothing.
``fashion_mnist`` and ``mnist`` read the standard IDX files (gzip or not; Debian's ``dataset-fashion-mnist``
puts Fashion-MNIST's under ``/usr/share/datasets/fashion-mnist``), ``cifar10`` the python batches
(``data_batch_1..5``, ``test_batch``), ``image_folder`` a ``<root>/<class>/<image>`` tree (or ``train/`` and
``test/`` trees under it). Every loader: validation carved from the training images with a seeded
permutation, the official test set where there is one, per-channel normalisation with the training
images' statistics, ``limit`` = use only the first N training images.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from nas.splits import DataSplits, resize  # noqa: F401 - the loaders' return type, re-exported

log = logging.getLogger(__name__)


def _split(n: int, val_frac: float, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac}, test_frac={test_frac} are invalid; expected fractions summing < 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_frac)), int(round(n * val_frac))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _standardise(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    mean = ref.mean(dim=(0, 2, 3), keepdim=True)
    std = ref.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


def load_digits(image_size: int = 32, val_frac: float = 0.15, test_frac: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's digits (1,797 grey 8x8 images, 10 classes), bilinearly upsampled to ``image_size``."""
    from sklearn.datasets import load_digits as _sk_digits

    if image_size < 8:
        raise ValueError(f"image_size={image_size} is invalid for digits; expected >= 8")
    d = _sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, va, te = _split(len(y), val_frac, test_frac, seed)
    ref = x[tr]
    xs = [_standardise(x[i], ref) for i in (tr, va, te)]
    return DataSplits("digits", xs[0], y[tr], xs[1], y[va], xs[2], y[te], 10)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's python batches are pickles by format: this reader resolves only what they hold (dicts, lists,
    bytes and numpy arrays); any other global, e.g. a payload that would run a command, is refused unread."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"CIFAR-10 batch {str(path)!r} cannot be read ({e}); expected CIFAR-10's python "
                         "batch format (a dict of data and labels)") from None
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d[b"labels"], dtype=np.int64)
    return x, y


def _cifar_files(root: str) -> tuple[Path, list[str]]:
    if not root:
        raise ValueError("data.root is empty; expected the folder holding CIFAR-10's data_batch_1..5 and test_batch")
    base = Path(root).expanduser()
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise ValueError(f"data.root={root!r} lacks {missing}; expected CIFAR-10 python batches there")
    return base, names


def load_cifar10(root: str, val_frac: float = 0.1, seed: int = 0, limit: int | None = None) -> DataSplits:
    """CIFAR-10 python batches from ``root`` (the folder holding ``data_batch_1`` … ``test_batch``)."""
    base, names = _cifar_files(root)
    parts = [_read_cifar_batch(base / n) for n in names[:5]]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(base / "test_batch")
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[: limit // 5], yte[: limit // 5]
    perm = np.random.default_rng(seed).permutation(len(ytr))
    n_val = int(round(len(ytr) * val_frac))
    va, tr = perm[:n_val], perm[n_val:]
    to_t = lambda a: torch.tensor(a, dtype=torch.float32) / 255.0  # noqa: E731
    x_all, x_test = to_t(xtr), to_t(xte)
    ref = x_all[tr]
    return DataSplits(
        "cifar10", _standardise(x_all[tr], ref), torch.tensor(ytr[tr]), _standardise(x_all[va], ref),
        torch.tensor(ytr[va]), _standardise(x_test, ref), torch.tensor(yte), 10,
    )


def _carve_val(n: int, val_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) of ``n`` training images: a seeded permutation, val first."""
    if not 0 < val_frac < 1:
        raise ValueError(f"val_frac={val_frac} is invalid; expected a fraction in (0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_frac)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 2):
        raise ValueError(f"limit={limit!r} is invalid; expected null or an integer >= 2 (training images used)")


def _splits(name: str, x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, y_test: np.ndarray,
            val_frac: float, seed: int, n_classes: int) -> DataSplits:
    """Val carved from train, every split standardised with the remaining training images' statistics."""
    tr, va = _carve_val(len(y_train), val_frac, seed)
    ref = x_train[tr]
    yt = torch.as_tensor(np.asarray(y_train, dtype=np.int64))
    return DataSplits(name, _standardise(x_train[tr], ref), yt[tr], _standardise(x_train[va], ref), yt[va],
                      _standardise(x_test, ref), torch.as_tensor(np.asarray(y_test, dtype=np.int64)), n_classes)


# ----------------------------------------------------------------------------------------------- IDX (MNIST)
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array of unsigned bytes (gzip-compressed when the file starts with gzip's magic)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"IDX file {str(path)!r} is a damaged gzip file ({e}); expected gzip-compressed IDX") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"file {str(path)!r} is not an IDX file of unsigned bytes; expected magic 0x0000 08 <ndim>")
    ndim = raw[3]
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"IDX file {str(path)!r} declares {ndim} dimensions; expected 1 to 4")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"IDX file {str(path)!r} holds {body.size} bytes of data; expected {int(np.prod(shape))} "
                         f"for shape {shape} (truncated file?)")
    return body.reshape(shape).copy()  # writable (frombuffer is read-only)


def _idx_path(base: Path, stem: str) -> Path | None:
    for cand in (base / stem, base / f"{stem}.gz", base / stem.replace("-idx", ".idx"),
                 base / f"{stem.replace('-idx', '.idx')}.gz"):
        if cand.is_file():
            return cand
    return None


def _idx_files(name: str, root: str) -> tuple[Path, dict[str, Path]]:
    if not root:
        raise ValueError(f"data.root is empty; expected the folder holding {name}'s IDX files {list(IDX_FILES)}")
    base = Path(str(root)).expanduser()
    paths = {stem: _idx_path(base, stem) for stem in IDX_FILES}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        hint = " (apt-get install dataset-fashion-mnist puts them there)" if str(root) == FASHION_MNIST_ROOT else ""
        raise ValueError(f"data.root={str(root)!r} lacks {missing} (or their .gz); expected {name}'s IDX files "
                         f"there{hint}")
    return base, paths


def load_idx_dataset(name: str, root: str, val_frac: float = 0.1, seed: int = 0, limit: int | None = None,
                     test_limit: int | None = None, n_classes: int = 10) -> DataSplits:
    """MNIST-format data from ``root``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). Test = the t10k set
    (its first ``test_limit`` images when given: quick trials only, figures use the whole set)."""
    _check_limit(limit)
    _check_limit(test_limit)
    base, paths = _idx_files(name, root)
    arrays = {stem: read_idx(p) for stem, p in paths.items()}
    xtr, ytr, xte, yte = (arrays[s] for s in IDX_FILES)
    for (xs, ys), split in (((xtr, ytr), "train"), ((xte, yte), "t10k")):
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise ValueError(f"{name} {split} files hold images {xs.shape} and labels {ys.shape}; expected "
                             "(N, H, W) images and N labels")
        if ys.size and int(ys.max()) >= n_classes:
            raise ValueError(f"{name} {split} labels reach {int(ys.max())}; expected classes 0..{n_classes - 1}")
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    if test_limit:
        xte, yte = xte[:test_limit], yte[:test_limit]
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32).unsqueeze(1) / 255.0  # noqa: E731
    log.info("%s: %d training (val carved from them) and %d test images of %dx%d from %s", name, len(ytr),
             len(yte), xtr.shape[1], xtr.shape[2], base)
    return _splits(name, to_t(xtr), ytr, to_t(xte), yte, val_frac, seed, n_classes)


def load_fashion_mnist(root: str = FASHION_MNIST_ROOT, val_frac: float = 0.1, seed: int = 0,
                       limit: int | None = None, test_limit: int | None = None) -> DataSplits:
    """Fashion-MNIST (70,000 grey 28x28 images, 10 classes): 60,000 train (val carved from them), 10,000 test."""
    return load_idx_dataset("fashion_mnist", root, val_frac, seed, limit, test_limit)


def load_mnist(root: str, val_frac: float = 0.1, seed: int = 0, limit: int | None = None,
               test_limit: int | None = None) -> DataSplits:
    """MNIST from its IDX files (same reader as Fashion-MNIST)."""
    return load_idx_dataset("mnist", root, val_frac, seed, limit, test_limit)


# ------------------------------------------------------------------------------------------- image folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _class_tree(base: Path, first_only: bool = False) -> dict[str, list[Path]]:
    """class folder -> its image files (``first_only``: at most two each, enough for the layout checks, found
    without walking the rest)."""
    classes = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    images = lambda d: (p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)  # noqa: E731
    if first_only:
        return {d.name: list(itertools.islice(images(d), 2)) for d in classes}
    return {d.name: sorted(images(d)) for d in classes}


def _image_trees(root: str, first_only: bool = False) -> tuple[dict[str, dict[str, list[Path]]], list[str]]:
    """``{"train": {class: files}[, "test": ...]}`` and the sorted class names of an image-folder root
    (``first_only``: at most two files per class, enough to check the layout)."""
    if not root:
        raise ValueError("data.root is empty; expected a folder of <class>/<image> subfolders")
    base = Path(str(root)).expanduser()
    if not base.is_dir():
        raise ValueError(f"data.root={str(root)!r} is not a folder; expected <class>/<image> subfolders there")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    train_dir = base / "train" if test_dir is not None and (base / "train").is_dir() else base
    trees = {"train": _class_tree(train_dir, first_only)}
    if train_dir != base:
        trees["test"] = _class_tree(test_dir, first_only)
    classes = sorted(trees["train"])
    if len(classes) < 2 or sum(map(len, trees["train"].values())) < 2:
        raise ValueError(f"data.root={str(root)!r} has {len(classes)} class folders with images; expected >= 2 "
                         f"<class>/ folders of {list(IMAGE_SUFFIXES[:3])}... images")
    if "test" in trees and sorted(trees["test"]) != classes:
        raise ValueError(f"{test_dir} has classes {sorted(trees['test'])}; expected the training classes {classes}")
    return trees, classes


EVAL_TRANSFORMS = ("resize", "ofa")
NORMALIZE = ("data", "imagenet")


def load_image_folder(root: str, image_size: int = 32, channels: int = 3, val_frac: float = 0.1,
                      test_frac: float = 0.2, seed: int = 0, limit: int | None = None,
                      eval_transform: str = "resize", normalize: str = "data") -> DataSplits:
    """Images in ``<root>/<class>/...`` (classes = sorted folder names), resized to ``image_size``; with
    ``<root>/train/<class>`` and ``<root>/test/<class>`` (or ``val/``) the test split is that tree's,
    otherwise ``test_frac`` of the images (seeded). ``channels``: 1 (grey) or 3 (RGB).

    ``eval_transform="ofa"``: every subnet sees the images as Once-for-All evaluates them at its resolution r
    (shorter side to ceil(r/0.875), centre crop r, from the files: :mod:`nas.image_eval`), normalised with
    ImageNet's mean/std when ``normalize="imagenet"``, else with the training images' statistics."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is invalid; expected 1 (grey) or 3 (RGB)")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} is invalid; expected an integer >= 8")
    if eval_transform not in EVAL_TRANSFORMS:
        raise ValueError(f"eval_transform={eval_transform!r} is invalid; expected one of {list(EVAL_TRANSFORMS)}")
    if normalize not in NORMALIZE or (normalize == "imagenet" and eval_transform != "ofa"):
        raise ValueError(f"normalize={normalize!r} is invalid with eval_transform={eval_transform!r}; expected "
                         f"'data', or 'imagenet' together with eval_transform=ofa")
    _check_limit(limit)
    trees, classes = _image_trees(root)
    if eval_transform == "ofa":
        return _ofa_folder(trees, classes, image_size, channels, val_frac, test_frac, seed, limit, normalize)
    mode = "L" if channels == 1 else "RGB"

    def read(tree: dict[str, list[Path]]) -> tuple[torch.Tensor, np.ndarray]:
        files = [(p, i) for i, c in enumerate(classes) for p in tree[c]]
        xs = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
        for k, (p, _) in enumerate(files):
            try:
                with Image.open(p) as im:
                    im = im.convert(mode).resize((image_size, image_size), Image.BILINEAR)
            except (UnidentifiedImageError, OSError) as e:
                raise ValueError(f"image {str(p)!r} cannot be read ({e}); expected an image file") from e
            xs[k] = np.asarray(im, dtype=np.uint8).reshape(image_size, image_size, channels)
        x = torch.from_numpy(xs).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return x, np.array([i for _, i in files], dtype=np.int64)

    x, y = read(trees["train"])
    if "test" in trees:
        x_test, y_test = read(trees["test"])
    else:
        if not 0 < test_frac < 1:
            raise ValueError(f"test_frac={test_frac} is invalid; expected a fraction in (0, 1)")
        perm = np.random.default_rng(seed + 1).permutation(len(y))
        n_test = max(1, int(round(len(y) * test_frac)))
        te, rest = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        x_test, y_test, x, y = x[te], y[te], x[rest], y[rest]
    if limit:
        x, y = x[:limit], y[:limit]
    log.info("image_folder: %d classes, %d training and %d test images (%dx%d, %d channel(s)) from %s",
             len(classes), len(y), len(y_test), image_size, image_size, channels, Path(str(root)).expanduser())
    return _splits("image_folder", x, y, x_test, y_test, val_frac, seed, len(classes))


def _ofa_folder(trees: dict[str, dict[str, list[Path]]], classes: list[str], image_size: int, channels: int,
                val_frac: float, test_frac: float, seed: int, limit: int | None, normalize: str) -> DataSplits:
    """``load_image_folder(eval_transform="ofa")``: the same train/val/test membership rules, OFA's transform."""
    from nas.image_eval import IMAGENET_MEAN, IMAGENET_STD, folder_splits

    rows = lambda tree: [(p, i) for i, c in enumerate(classes) for p in tree[c]]  # noqa: E731
    train = rows(trees["train"])
    if "test" in trees:
        test = rows(trees["test"])
    else:
        if not 0 < test_frac < 1:
            raise ValueError(f"test_frac={test_frac} is invalid; expected a fraction in (0, 1)")
        perm = np.random.default_rng(seed + 1).permutation(len(train))
        n_test = max(1, int(round(len(train) * test_frac)))
        test = [train[i] for i in np.sort(perm[:n_test])]
        train = [train[i] for i in np.sort(perm[n_test:])]
    train = train[:limit] if limit else train
    tr, va = _carve_val(len(train), val_frac, seed)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize == "imagenet" else (None, None)
    out = folder_splits("image_folder", [train[i] for i in tr], [train[i] for i in va], test, image_size, channels,
                        len(classes), mean, std)
    log.info("image_folder (OFA eval transform): %d classes, %d training, %d val and %d test images", len(classes),
             len(tr), len(va), len(test))
    return out


# what each loader needs on disk, checked before a run writes anything (the loaders run the same checks)
_SOURCE_CHECKS = {
    "nas.data.load_cifar10": lambda kw: _cifar_files(kw.get("root")),
    "nas.data.load_fashion_mnist": lambda kw: _idx_files("fashion_mnist", kw.get("root", FASHION_MNIST_ROOT)),
    "nas.data.load_mnist": lambda kw: _idx_files("mnist", kw.get("root")),
    "nas.data.load_image_folder": lambda kw: _image_trees(kw.get("root"), first_only=True),
}


def check_data_source(node: Any) -> None:
    """Raise the loader's own one-line error when a ``data`` config's files are missing or unusable (no root,
    missing IDX/CIFAR files, fewer than two image classes), without reading the images."""
    kw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    check = _SOURCE_CHECKS.get(str(kw.get("_target_")))
    if check is not None:
        check(kw)
