"""Where things live, and the checks every public entry point shares.

One setting each:

- ``HASHSTUDY_DATA``: the folder that holds the datasets (default ``<repo>/data``).
- ``HASHSTUDY_CACHE``: decoded arrays, splits, features, trained weights
  (default ``<repo>/data/cache``).
- ``HASHSTUDY_REPORTS``: executed notebooks, metrics, tables and figures
  (default ``<repo>/reports``).
- ``HASHSTUDY_STAGING``: set by the report command for the notebook it runs, never by hand:
  the folder where that notebook's report is written until the notebook has finished
  (see :func:`written_dir`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

PROFILES = ("smoke", "quick", "paper")


def repo_root() -> Path:
    """The checkout this library was installed from (``lib/hashstudy/..``)."""
    return Path(__file__).resolve().parents[2]


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Folder searched for datasets (``HASHSTUDY_DATA``, default ``<repo>/data``)."""
    return _env_path("HASHSTUDY_DATA", repo_root() / "data")


def cache_dir(*parts: str) -> Path:
    """Cache folder (``HASHSTUDY_CACHE``, default ``<repo>/data/cache``), created on demand."""
    path = _env_path("HASHSTUDY_CACHE", repo_root() / "data" / "cache").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def reports_dir(*parts: str) -> Path:
    """Report folder (``HASHSTUDY_REPORTS``, default ``<repo>/reports``), created on demand."""
    path = _env_path("HASHSTUDY_REPORTS", repo_root() / "reports").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


STAGING_ENV = "HASHSTUDY_STAGING"
STAGING_NAME = ".staging"


def written_dir(folder) -> Path:
    """Where the report meant for ``folder`` is being written.

    The report command (:mod:`hashstudy.regenerate`) runs each notebook with
    ``HASHSTUDY_STAGING=<report folder>/.staging``: the notebook's
    :class:`hashstudy.reporting.Report` writes there, and the command moves the files into
    the report folder only when the notebook has finished, so an interrupted or failed run
    leaves the previous report as it was. For that one folder this returns the staging
    folder, so that the notebook reads back what it has just written (its verdicts, say);
    for every other folder, and outside the report command, it returns ``folder``.
    """
    folder = Path(folder)
    staged = os.environ.get(STAGING_ENV)
    if staged and Path(staged).name == STAGING_NAME and \
            Path(staged).parent.resolve() == folder.resolve():
        return Path(staged)
    return folder


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(
            f"unknown {name} {value!r}; allowed values: {', '.join(map(repr, allowed))}"
        )


def check_profile(profile: str) -> str:
    check_choice("profile", profile, PROFILES)
    return profile


def check_bits(bits, low: int = 1, high: int = 1024) -> list[int]:
    """Validate one code length or a list of them; returns a list of ints."""
    values: Sequence = [bits] if isinstance(bits, (int,)) else list(bits)
    out = []
    for b in values:
        if isinstance(b, bool) or not isinstance(b, (int,)) and not hasattr(b, "__index__"):
            raise TypeError(f"code length must be an integer, got {b!r}")
        b = int(b)
        if not low <= b <= high:
            raise ValueError(
                f"code length {b} is outside the allowed range {low}..{high} bits"
            )
        out.append(b)
    return out
