"""Run-directory state shared by the stages: the context, its paths, atomic writers and the stage markers.

Stages import this module; it imports no stage (the pipeline sits on top of both). A finished stage leaves
``stages/<name>.json``, the marker that vouches for its outputs; see :class:`StageMarkers`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from latency_luts import files

log = logging.getLogger(__name__)


def file_stem(text: str) -> str:
    """A short, filesystem-safe name for a key (an arch string, ``strategy|arch``): files keyed by arch."""
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:24]


def this_process() -> str:
    """``host:pid``: who owns a claim or a trial, as :func:`owner_gone` reads it back."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(owner: str) -> bool | None:
    """Whether the process ``host:pid[:...]`` is known dead: True (its pid is gone on this host), False (alive
    here), None (another host, or not a process id: only its heartbeat can tell)."""
    import socket

    host, _, rest = str(owner).partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint the train stage wrote (``{"model": state dict, ...}``), read with ``torch.load(weights_only=
    True)``: tensors and plain containers only. A file that needs code to load is refused in one line
    (``ValueError``), its code never run; so is any other unreadable file."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds; all mean "not a plain checkpoint"
        text = str(e).strip()
        why = ("it needs code to load, which is refused (weights_only=True)"
               if "weights_only" in text or "Unsupported global" in text else (text.splitlines() or [""])[0][:200])
        raise ValueError(f"checkpoint {str(path)!r} cannot be read as weights: {why}; expected a checkpoint "
                         "written by the train stage (force=[train] retrains it)") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"checkpoint {str(path)!r} holds no 'model' state dict; expected a checkpoint written "
                         "by the train stage (force=[train] retrains it)")
    return state


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename: readers never see half a file."""
    files.write_json_atomic(path, obj)


def write_csv_atomic(path: Path, df: Any) -> None:
    """Write a DataFrame as CSV to a temporary file beside ``path``, then rename."""
    with files.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def build(node: Any, drop: tuple[str, ...] = ("name",), **overrides: Any) -> Any:
    """``hydra.utils.instantiate`` of a config node with a ``_target_``; ``drop`` lists label-only keys
    (``name`` names the option in summaries and is not a constructor argument), ``overrides`` fill values the
    config leaves open (``null`` keys are taken from ``overrides`` when given there)."""
    from hydra.utils import instantiate

    kw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if "_target_" not in kw:
        raise ValueError(f"config node {sorted(kw)} has no _target_; expected a buildable config")
    for key in drop:
        kw.pop(key, None)
    for key, val in overrides.items():
        if kw.get(key) is None:
            kw[key] = val
    from hydra.errors import InstantiationException

    try:
        return instantiate(kw, _convert_="all")
    except InstantiationException as e:  # Hydra wraps the constructor's own one-line error: pass that on
        cause = e.__cause__
        if isinstance(cause, ValueError | FileNotFoundError | TypeError):
            raise ValueError(f"{kw['_target_']}: {cause}") if isinstance(cause, TypeError) else cause from None
        raise


def group_option(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` as a plain dict (interpolations unresolved), for callers outside a Hydra
    run (benchmarks, notebooks) that build what the pipeline builds; an unknown option names the choices."""
    from importlib import resources

    folder = resources.files("nas.conf") / group
    options = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in options:
        raise ValueError(f"{group} {name!r} is unknown; expected one of {options}")
    return OmegaConf.to_container(OmegaConf.load(str(folder / f"{name}.yaml")), resolve=False)


def build_data(name: str, **settings: Any) -> Any:
    """The dataset of ``conf/data/<name>.yaml`` (the loader ``hwnas data=<name>`` runs) with ``settings``
    replacing its keys (``root``, ``limit``, ``seed`` ...); a key the option does not have is an error."""
    node = group_option("data", name)
    for key, val in settings.items():
        if key not in node:
            raise ValueError(f"data {name!r} has no setting {key!r}; expected one of "
                             f"{sorted(k for k in node if k not in ('_target_', 'name'))}")
        node[key] = val
    if node.get("root") == "???":
        raise ValueError(f"data {name!r} needs its root; expected the folder holding its files")
    return build(node)


def build_space(node: Any, n_classes: int | None = None, in_channels: int | None = None) -> Any:
    """The search space of a ``search_space`` config node; ``null`` classes/channels filled from the arguments
    (the data's), a ``null`` ``resolutions`` left to the space's default."""
    kw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if "resolutions" in kw and kw["resolutions"] is None:
        kw.pop("resolutions")
    return build(kw, drop=(), n_classes=n_classes, in_channels=in_channels)


def _try_flock(fh: Any) -> bool:
    import fcntl

    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class StageMarkers:
    """``stages/<name>.json`` of a run directory: present = the stage finished and its outputs are valid."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / "stages"

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def done(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> dict[str, Any]:
        return json.loads(self.path(name).read_text())

    def write(self, name: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(name), record)

    @contextmanager
    def lock(self, name: str, while_waiting: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold ``stages/<name>.lock`` (an exclusive ``flock``, released by the OS if the process dies) while a
        stage runs: processes sharing a run directory (search workers) run it once, the others wait and then
        find its marker. While it waits, a process calls ``while_waiting()`` (a stage's ``help``: one unit of
        the holder's work, True if it did some) and sleeps half a second when there was nothing to do."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{name}.lock", "a") as fh:
            if not _try_flock(fh):
                log.info("stage %s: another process of this run directory is running it; %s", name,
                         "helping it meanwhile" if while_waiting else "waiting")
                if while_waiting is None:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                else:
                    while not _try_flock(fh):
                        if not while_waiting():
                            time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def drop(self, name: str) -> bool:
        """Remove a marker (before a forced stage starts, so a killed forced run is rerun); True if there was one."""
        p = self.path(name)
        if p.is_file():
            p.unlink()
            return True
        return False


@dataclass
class RunContext:
    """What stages share: the config, the run directory and lazily built objects (data, space, supernet)."""

    cfg: DictConfig
    run_dir: Path
    records: dict[str, Any] = field(default_factory=dict)
    dist: Any = None  # nas.distributed.DistContext of a torchrun job; None = one process

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> RunContext:
        """The context of an existing run directory, with the config its run composed (``.hydra/config.yaml``):
        for benchmarks and notebooks that reuse a run's supernet and predictors."""
        run_dir = Path(run_dir)
        path = run_dir / ".hydra" / "config.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} has no .hydra/config.yaml; expected the directory of a hwnas run")
        cfg = OmegaConf.load(path)
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = str(run_dir)
        return cls(cfg=cfg, run_dir=run_dir)

    @cached_property
    def data(self):  # noqa: ANN201 - nas.data.DataSplits
        """The dataset of ``cfg.data``, built from its ``_target_`` (a loader of nas.data)."""
        data = build(self.cfg.data)
        log.info("data %s: %s, %d classes, %dx%d", self.cfg.data.name, data.sizes(), data.n_classes,
                 data.image_size, data.image_size)
        return data

    @cached_property
    def space(self):  # noqa: ANN201 - search_spaces.SearchSpace
        """The search space of ``cfg.search_space``, built from its ``_target_``; ``null`` classes and channels
        are taken from the data."""
        node = self.cfg.search_space
        needs_data = node.get("n_classes") is None or node.get("in_channels") is None
        return build_space(node, *((self.data.n_classes, self.data.channels) if needs_data else (None, None)))

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "supernet.pt"

    def checkpoint_key(self) -> dict[str, int]:
        """What identifies the supernet checkpoint (size, mtime): files derived from it record this key and are
        dropped when it changes (a retrained supernet)."""
        st = self.checkpoint.stat()
        return {"checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns}

    @property
    def markers(self) -> StageMarkers:
        return StageMarkers(self.run_dir)

    def load_supernet(self):  # noqa: ANN201 - torch.nn.Module
        if not self.checkpoint.exists():
            raise FileNotFoundError(f"no supernet checkpoint at {self.checkpoint}; run the train stage first")
        net = self.space.build_supernet()
        net.load_state_dict(read_checkpoint(self.checkpoint)["model"])
        return net.eval()

    @cached_property
    def device(self):  # noqa: ANN201 - latency_luts.device.Device
        """The run's device, built from ``cfg.device``'s ``_target_``: every stage prepares and times through it."""
        from latency_luts.device import build_device

        return build_device(self.cfg.device)

    def device_profile(self) -> dict[str, Any]:
        """Where and how the run's latencies are measured (:meth:`latency_luts.device.Device.profile`)."""
        return self.device.profile()

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)
