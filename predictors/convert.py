"""``hwnas-convert-predictor --trusted OLD.pkl NEW.skops``: rewrite a predictor pickled by an older version in
the data-only saved-predictor format (:mod:`predictors.saved`).

Unpickling runs whatever code the file holds, so this is for files the user trusts (their own runs) and asks
for ``--trusted``; nothing else in the product ever unpickles a predictor. The converted file is read back
through the allow-listed loader before the command reports success.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any

WARNING = ("this unpickles OLD, which runs any code the file holds: convert only a file you trust "
           "(one your own hwnas run wrote)")


def _predictor(obj: Any, path: Path) -> Any:
    """The predictor an old file held: an ``ArchPredictor`` / ``EnsembleRegressor`` pickled whole, or a few-shot
    predictor pickled as ``{"format", "class", "state"}``."""
    from predictors.arch_predictor import ArchPredictor
    from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline
    from predictors.regressors import EnsembleRegressor

    if isinstance(obj, ArchPredictor | EnsembleRegressor | FewShotLatencyPredictor | SourceRidgeBaseline):
        return obj
    classes = {c.__name__: c for c in (FewShotLatencyPredictor, SourceRidgeBaseline)}
    if isinstance(obj, dict) and obj.get("class") in classes and isinstance(obj.get("state"), dict):
        from predictors.fewshot.common import FORMAT_VERSION

        if obj.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} holds a {obj['class']} of layout {obj.get('format')!r}; this version converts "
                             f"layout {FORMAT_VERSION} (refit it: rerun the calibrate stage)")
        out = classes[obj["class"]].__new__(classes[obj["class"]])
        out.__dict__.update(obj["state"])
        return out
    raise ValueError(f"{path} holds a {type(obj).__name__}; expected a pickled hwnas predictor")


def convert(old: str | Path, new: str | Path) -> Path:
    """Unpickle ``old`` (runs its code: trusted files only), save it to ``new`` and read it back."""
    from predictors import saved
    from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline
    from predictors.fewshot.common import FORMAT_VERSION

    old, new = Path(old), Path(new)
    if new.suffix != saved.SUFFIX:
        raise ValueError(f"output {new} ends in {new.suffix!r}; expected {saved.SUFFIX}")
    with open(old, "rb") as fh:
        obj = _predictor(pickle.load(fh), old)  # noqa: S301 - the user vouched for this file (--trusted)
    layout = FORMAT_VERSION if isinstance(obj, FewShotLatencyPredictor | SourceRidgeBaseline) else None
    saved.save(obj, new, layout=layout)
    saved.read(new, type(obj), layout=layout)
    return new


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwnas-convert-predictor", description=(
        "Rewrite a predictor pickled by an older hwnas (.pkl) as a data-only .skops file. Warning: " + WARNING + "."))
    ap.add_argument("old", type=Path, help="the pickled predictor (.pkl) of an older version")
    ap.add_argument("new", type=Path, help="the file to write (.skops)")
    ap.add_argument("--trusted", action="store_true", help="confirm you trust OLD: unpickling runs its code")
    args = ap.parse_args(argv)
    if not args.trusted:
        print(f"hwnas-convert-predictor: {WARNING}; rerun with --trusted if you do", file=sys.stderr)
        return 2
    print(f"hwnas-convert-predictor: {WARNING}", file=sys.stderr)
    try:
        convert(args.old, args.new)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        print(f"hwnas-convert-predictor: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
