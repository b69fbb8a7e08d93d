"""HELP's released latency predictor (Lee et al., NeurIPS 2021) as a peer of ``bench=latency_fewshot``.

HELP's own code (``help.py``, ``net.py``, ``loader.py``, ``utils.py``, ``parser.py``) and its meta-trained
checkpoints are read at run time from ``bench.help_repo`` (a snapshot of HayeonLee/HELP, trusted peer code) and run
unmodified on the CPU: :func:`peer_context` makes torch's ``.cuda()`` a no-op while HELP runs (HELP places every
tensor and module on the GPU) and restores it afterwards; nothing of HELP is copied into the project.

Example::

    from nas.bench.help_peer import HelpPeer
    peer = HelpPeer("../shared/peers/HELP", "nb201")
    peer.reproduce(seeds=[3])          # HELP's own meta-test: its 10 samples + 10 reference archs, its devices

NB201's graph input: the snapshot lacks HELP's ``architecture.pt`` (per arch an operation matrix and an adjacency
matrix), so :func:`nb201_graph` rebuilds it from the canonical NB201 string: the cell as an operation-per-node
DAG (input, the six edge operations in the string's order, output), one-hot over :data:`NB201_NODE_TYPES`; HELP's
``utils.add_global_node`` then adds its global node exactly as its loader does. The feature order is the one
HELP's GitHub issue #2 shows (the first entry of ``architecture.pt``, printed by a user), the two types it leaves
open settled on HELP's meta-valid devices; the reproduction of HELP's README figures checks it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
import tempfile
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPACES = {"nb201": "nasbench201", "fbnet": "fbnet"}  # ours -> HELP's name
# HELP's README, Table 3 (nb201) and Table 2 (fbnet): Spearman of HELP with 10 samples of the target
README = {
    "nb201": {"titan_rtx_256": 0.987, "gold_6226": 0.989, "pixel2": 0.802, "raspi4": 0.890, "eyeriss": 0.940,
              "fpga": 0.985},
    "fbnet": {"raspi4": 0.887, "eyeriss": 0.943, "fpga": 0.892},
}
README_MEAN = {"nb201": 0.932, "fbnet": 0.910}
# HELP's README commands (its meta-test scripts): device splits and pool size per space
README_ARGS = {
    "nb201": ["--num_meta_train_sample", "900",
              "--meta_train_devices", "1080ti_1,1080ti_32,1080ti_256,silver_4114,silver_4210r,samsung_a50,pixel3,"
                                      "essential_ph_1,samsung_s7",
              "--meta_valid_devices", "titanx_1,titanx_32,titanx_256,gold_6240",
              "--meta_test_devices", "titan_rtx_256,gold_6226,fpga,pixel2,raspi4,eyeriss"],
    "fbnet": ["--num_meta_train_sample", "4000", "--num_episodes", "4000",
              "--meta_train_devices", "1080ti_1,1080ti_32,1080ti_64,silver_4114,silver_4210r,samsung_a50,pixel3,"
                                      "essential_ph_1,samsung_s7",
              "--meta_valid_devices", "titanx_1,titanx_32,titanx_64,gold_6240",
              "--meta_test_devices", "fpga,raspi4,eyeriss"],
}
HELP_SEED = 3  # the seed of HELP's meta-test scripts
CODE_FILES = ("help.py", "net.py", "loader.py", "utils.py", "parser.py")
_MODULES = tuple(f[:-3] for f in CODE_FILES)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# HELP's node types in its feature order: architecture.pt's entry 0 as printed in HELP's GitHub issue #2 fixes input,
# avg_pool_3x3, nor_conv_1x1, skip_connect, output; of the two orders left, this one ranks HELP's meta-valid devices
# at 0.955 with the checkpoint, the other at 0.117
NB201_NODE_TYPES = ("input", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3", "none", "skip_connect", "output")
# the cell's six edges (from node, to node) in the order of the NB201 string
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))


def required_files(space: str) -> list[str]:
    """The files of ``bench.help_repo`` the peer reads for ``space``."""
    data = f"data/{SPACES[space]}"
    arch = "str_arch2idx.pt" if space == "nb201" else "metainfo.pt"
    return [*CODE_FILES, f"{data}/checkpoint/help_max_corr.pt", f"{data}/hardware_embedding_index.pt", f"{data}/{arch}"]


def check_repo(repo: Any, space: str) -> Path:
    """``repo`` as a Path when it holds HELP's code and ``space``'s checkpoint; else a one-line ValueError."""
    if space not in SPACES:
        raise ValueError(f"bench.space={space!r} is invalid with bench.peers=[help]; expected one of {list(SPACES)}")
    path = Path(str(repo))
    missing = [f for f in required_files(space) if not (path / f).is_file()]
    if missing:
        raise ValueError(f"bench.help_repo={str(repo)!r} lacks HELP's {missing[0]}; expected a HayeonLee/HELP snapshot "
                         "with its released checkpoints (../shared/peers/HELP)")
    return path


def _tensorboard_placeholder() -> types.ModuleType:
    """``help.py`` imports tensorboard's SummaryWriter at load time for meta-training logs only; where tensorboard
    is not installed this module takes its place during the import (meta-testing never writes a log)."""
    mod = types.ModuleType("torch.utils.tensorboard")

    def summary_writer(*_: Any, **__: Any) -> None:
        raise ValueError("meta-training HELP needs tensorboard; this adapter only meta-tests HELP's checkpoints")

    mod.SummaryWriter = summary_writer  # type: ignore[attr-defined]
    return mod


_LOADED: dict[str, types.SimpleNamespace] = {}


def load_help_modules(repo: Path) -> types.SimpleNamespace:
    """HELP's modules imported from ``repo`` under their own names (``help``, ``net``, ``loader``, ``utils``,
    ``parser``), then taken out of ``sys.modules`` and ``sys.path`` again so no other import sees them."""
    key = str(repo.resolve())
    if key in _LOADED:
        return _LOADED[key]
    saved = {n: sys.modules.pop(n) for n in _MODULES if n in sys.modules}
    placeholder = False
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        sys.modules["torch.utils.tensorboard"] = _tensorboard_placeholder()
        placeholder = True
    sys.path.insert(0, key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mods = {n: importlib.import_module(n) for n in _MODULES}
    finally:
        sys.path.remove(key)
        for n in _MODULES:
            sys.modules.pop(n, None)
        if placeholder:
            sys.modules.pop("torch.utils.tensorboard", None)
        sys.modules.update(saved)
    _LOADED[key] = types.SimpleNamespace(**mods)
    return _LOADED[key]


@contextlib.contextmanager
def peer_context() -> Iterator[None]:
    """While HELP runs: ``Tensor.cuda`` and ``Module.cuda`` return their object unchanged (the CPU run), HELP's
    numpy/torch deprecation warnings (``np.row_stack``, ``tensor != None``) are silenced, and torch uses one
    thread (HELP's tasks are tiny: on a busy 2-core machine two threads made its meta-test 4x slower); all
    restored on exit."""
    tensor_cuda, module_cuda, threads = torch.Tensor.cuda, torch.nn.Module.cuda, torch.get_num_threads()
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.Tensor.cuda = tensor_cuda  # type: ignore[method-assign]
        torch.nn.Module.cuda = module_cuda  # type: ignore[method-assign]
        torch.set_num_threads(threads)


def nb201_graph(arch: str) -> tuple[np.ndarray, np.ndarray]:
    """An NB201 cell string as HELP's ``architecture.pt`` entry: (operation matrix 8 x 7, adjacency matrix 8 x 8),
    nodes input, the six edge operations, output; ``adjacency[i, j] = 1`` when node i feeds node j."""
    ops = [t.split("~")[0] for node in arch.split("+") for t in node.strip("|").split("|")]
    if len(ops) != 6 or any(o not in NB201_OPS for o in ops):
        raise ValueError(f"arch {arch!r} is not an NB201 cell string; expected six edges of {list(NB201_OPS)}")
    op = np.zeros((8, len(NB201_NODE_TYPES)), dtype=np.float32)
    adj = np.zeros((8, 8), dtype=np.float32)
    op[0, NB201_NODE_TYPES.index("input")] = op[7, NB201_NODE_TYPES.index("output")] = 1
    for i, (src, dst) in enumerate(NB201_EDGES):
        op[i + 1, NB201_NODE_TYPES.index(ops[i])] = 1
        preds = [0] if src == 0 else [j + 1 for j, (_, d) in enumerate(NB201_EDGES) if d == src]
        adj[preds, i + 1] = 1
        if dst == 3:
            adj[i + 1, 7] = 1
    return op, adj


def _help_args(mods: types.SimpleNamespace, repo: Path, space: str, save_path: str) -> Any:
    """HELP's arguments as its parser builds them for the README's meta-test command of ``space``."""
    argv = ["main.py", "--search_space", SPACES[space], "--mode", "meta-test", "--num_samples", "10",
            "--seed", str(HELP_SEED), "--main_path", str(repo), "--save_path", save_path,
            "--load_path", str(repo / "data" / SPACES[space] / "checkpoint" / "help_max_corr.pt"), *README_ARGS[space]]
    old, sys.argv = sys.argv, argv
    try:
        args = mods.parser.get_parser()
    finally:
        sys.argv = old
    args.data_path = str(repo / "data" / SPACES[space])  # what HELP's main.set_path does
    return args


class HelpPeer:
    """HELP's meta-learner with its released checkpoint, meta-tested on the CPU.

    :meth:`reproduce` runs HELP's own meta-test (``HELP.test_predictor``: its devices, 10 random samples of the
    target's trimmed pool, its 10 reference archs, its query); :meth:`predict` adapts to any measurements."""

    def __init__(self, repo: Any, space: str) -> None:
        self.repo, self.space = check_repo(repo, space), space
        self.mods = load_help_modules(self.repo)
        self._tmp = tempfile.TemporaryDirectory(prefix="help_peer_")
        self.args = _help_args(self.mods, self.repo, space, self._tmp.name)
        self.encode = self._encoder()
        data_cls, load_archs = self.mods.loader.Data, self.mods.loader.Data.load_archs
        if space == "nb201":  # architecture.pt is missing: the same list from the rebuilt graphs
            strings = self.reference_space()

            def rebuilt(data: Any) -> None:
                data.archs = [self.encode(a) for a in strings]

            data_cls.load_archs = rebuilt
        try:
            with peer_context(), contextlib.redirect_stdout(io.StringIO()):
                torch.manual_seed(HELP_SEED)
                self.help = self.mods.help.HELP(self.args)
                self.help.load_model()
        finally:
            data_cls.load_archs = load_archs
        idx = [int(i) for i in torch.load(self.repo / "data" / SPACES[space] / "hardware_embedding_index.pt")]
        self.reference_archs = [self.reference_space()[i] for i in idx]

    def reference_space(self) -> list[str]:
        """HELP's archs in its index order, as our arch strings."""
        if not hasattr(self, "_space_archs"):
            data = self.repo / "data" / SPACES[self.space]
            if self.space == "nb201":
                s2i = torch.load(data / "str_arch2idx.pt")
                archs = [""] * len(s2i)
                for s, i in s2i.items():
                    archs[int(i)] = s
            else:
                archs = [",".join(a["arch_str"]) for a in torch.load(data / "metainfo.pt")["arch"]]
            self._space_archs = archs
        return self._space_archs

    def _encoder(self) -> Any:
        """arch string -> HELP's input for it (nb201: [features, adjacency] with HELP's global node; fbnet: HELP's
        ``arch_enc`` of the op indices, the op-name -> index map read from HELP's ``metainfo.pt``)."""
        utils = self.mods.utils
        if self.space == "nb201":
            def enc(arch: str) -> list[torch.Tensor]:
                op, adj = nb201_graph(arch)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return [utils.add_global_node(op, ifAdj=False), utils.add_global_node(adj, ifAdj=True)]
            return enc
        meta = torch.load(self.repo / "data" / "fbnet" / "metainfo.pt")["arch"]
        index = {n: i for a in meta for n, i in zip(a["arch_str"], a["op_idx_list"], strict=True)}

        def enc_fbnet(arch: str) -> torch.Tensor:
            names = arch.split(",")
            bad = [n for n in names if n not in index]
            if bad or len(names) != 22:
                raise ValueError(f"arch {arch!r} is not an fbnet string; expected 22 blocks of {sorted(index)}")
            return utils.arch_enc([index[n] for n in names])
        return enc_fbnet

    def batch(self, archs: list[str]) -> Any:
        """HELP's model input for ``archs`` (stacked as HELP's loader stacks them)."""
        xs = [self.encode(a) for a in archs]
        if self.space == "nb201":
            return (torch.stack([x[0] for x in xs]), torch.stack([x[1] for x in xs]))
        return torch.stack(xs)

    def take(self, x: Any, rows: Any) -> Any:
        """The rows ``rows`` of a :meth:`batch`."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return (x[0][rows], x[1][rows]) if self.space == "nb201" else x[rows]

    def predict(self, reference_latency: np.ndarray, xs: Any, latency: np.ndarray, xq: Any, seed: int,
                scale: tuple[float, float] | None = None) -> np.ndarray:
        """HELP's meta-test on one task: the hardware embedding from the target's latencies of the 10 reference
        archs (HELP's min-max normalisation), then its few-shot adaptation (Meta-SGD steps from the
        embedding-modulated initialisation) on the measured archs ``xs`` (a :meth:`batch`) / ``latency``, averaged
        over its MC samples of the modulation; returns the predicted latency (ms) of the archs ``xq``. The targets
        are scaled to [0.05, 0.95] of ``scale`` (HELP's meta-test: the min/max of the device's trimmed pool, which
        takes hundreds of measurements; default: the min/max of ``latency``, the best of the deployable choices on
        HELP's meta-valid devices: nb201 0.949 against 0.923 with the reference archs' latencies included)."""
        h = self.help
        latency, reference_latency = np.asarray(latency, dtype=np.float64), np.asarray(reference_latency, dtype=np.float64)
        lo, hi = scale if scale is not None else (latency.min(), latency.max())
        hw = self.mods.utils.normalization(torch.FloatTensor(reference_latency), portion=1.0)
        ys = torch.FloatTensor((latency - lo) / (hi - lo) * 0.9 + 0.05).view(-1, 1)
        total = None
        with torch.random.fork_rng(), peer_context():
            torch.manual_seed(seed)
            for _ in range(h.mc_sampling):
                adapted, _kl = h.train_single_task(hw, xs, ys, h.num_eval_updates)
                with torch.no_grad():
                    out = h.model(xq, hw, adapted)
                total = out if total is None else total + out
        pred = (total / h.mc_sampling).numpy().ravel().astype(np.float64)
        return (pred - 0.05) / 0.9 * (hi - lo) + lo

    def reproduce(self, seeds: list[int]) -> dict[str, Any]:
        """HELP's own meta-test (``HELP.test_predictor``, unmodified), once per seed (``torch.manual_seed`` as its
        ``main.py`` sets it); per device the Spearman it prints, per seed and their mean, beside the README's."""
        per_seed: dict[str, list[float]] = {d: [] for d in README[self.space]}
        pattern = re.compile(r"\[meta_test/(?!average\])(\S+)\] spearman (-?[0-9.]+)")
        for seed in seeds:
            buf = io.StringIO()
            with peer_context(), contextlib.redirect_stdout(buf):
                torch.manual_seed(seed)
                self.help.test_predictor()
            for dev, rho in pattern.findall(buf.getvalue()):
                per_seed[dev].append(float(rho))
        devices = {d: {"spearman_per_seed": v, "spearman_mean": float(np.mean(v)), "readme": README[self.space][d],
                       "diff": float(np.mean(v)) - README[self.space][d]} for d, v in per_seed.items()}
        mean = float(np.mean([m["spearman_mean"] for m in devices.values()]))
        seed_means = [float(np.mean([m["spearman_per_seed"][i] for m in devices.values()])) for i in range(len(seeds))]
        return {"space": self.space, "seeds": list(seeds), "devices": devices, "mean_spearman": mean,
                "mean_spearman_per_seed": seed_means, "readme_mean": README_MEAN[self.space],
                "diff": mean - README_MEAN[self.space], "within_0_02": abs(mean - README_MEAN[self.space]) <= 0.02,
                "nb201_node_types": list(NB201_NODE_TYPES) if self.space == "nb201" else None,
                "help_repo": str(self.repo), "checkpoint_episode": self._episode()}

    def _episode(self) -> int:
        return int(torch.load(self.args.load_path)["epi"])


def help_commit(repo: Path) -> str | None:
    """HELP's commit as the peers README beside ``repo`` records it (the snapshot has no .git)."""
    readme = repo.parent / "README.md"
    if readme.is_file():
        m = re.search(r"HELP/ — HayeonLee/HELP at commit ([0-9a-f]{40})", readme.read_text())
        if m:
            return m.group(1)
    return None

