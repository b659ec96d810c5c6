"""Prepare the smoke test of the notebooks.

``python -m hashstudy.smoke prepare OUT`` writes

- ``OUT/data``: a tiny data root in the real on-disk formats (MNIST IDX files,
  the CIFAR-10 JPEG mirror layout, CIFAR-100 batches, STL-10 binaries), made by
  :func:`hashstudy.synthetic.make_smoke_root`, so the notebooks' real loaders
  run without any dataset mirror or network;
- ``OUT/notebooks``: a copy of every ``notebooks/*.ipynb`` with
  ``profile = "smoke"`` injected after its ``parameters`` cell (papermill's
  ``prepare_only``), which ``pytest --nbval-lax`` then executes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import config


def prepare(out: Path, notebooks: list[Path] | None = None, seed: int = 0) -> list[Path]:
    import papermill as pm

    from . import synthetic

    out = Path(out)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    synthetic.make_smoke_root(data, seed=seed)
    nb_out = out / "notebooks"
    if nb_out.exists():
        shutil.rmtree(nb_out)
    nb_out.mkdir(parents=True)
    if notebooks is None:
        notebooks = sorted((config.repo_root() / "notebooks").glob("[0-9]*.ipynb"))
    written = []
    for nb in notebooks:
        target = nb_out / nb.name
        pm.execute_notebook(str(nb), str(target), parameters={"profile": "smoke"},
                            prepare_only=True, log_output=False, progress_bar=False)
        written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hashstudy.smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the smoke data root and smoke notebooks")
    p.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    written = prepare(args.out)
    print(f"smoke data root: {args.out / 'data'}")
    print(f"{len(written)} notebook(s) prepared with profile='smoke' in {args.out / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
