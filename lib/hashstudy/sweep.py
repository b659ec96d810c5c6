"""Ablation sweeps: one notebook over a grid of parameters and seeds, on Dask distributed.

Usage::

    python -m hashstudy.sweep 04_ddh --grid k1=5,15,30 --grid lambda1=1,15 \\
        --seeds 0,1,2 --profile quick --name k1_lambda1
    python -m hashstudy.sweep 04_ddh --name k1_lambda1 --aggregate-only \\
        --metric 'cifar10/ddh/*/map@1000'
    python -m hashstudy.sweep 04_ddh ... --scheduler tcp://host:8786   # an existing cluster

What it does:

- every cell of the grid (each combination of the ``--grid`` values, times each
  seed of ``--seeds``) is one papermill execution of the notebook with the
  cell's parameters and ``seed`` injected. Names and values are checked
  against the notebook's ``parameters`` cell before anything runs
  (:func:`hashstudy.regenerate.check_params`); a mistake is one ``error: ...``
  line and exit status 2;
- the cells are Dask tasks: by default on a ``LocalCluster`` sized to this
  machine (one single-threaded worker process per core, at most one per cell;
  ``--workers N`` to choose; each notebook gets the machine's cores divided by
  the number of workers as its BLAS/torch threads), or on an existing cluster
  with ``--scheduler ADDRESS`` (there a notebook gets ``HASHSTUDY_THREADS`` from
  its worker's environment, else the host's cores divided by the task threads
  of the workers on it). A task runs papermill in a subprocess of its worker,
  which stops when asked (Ctrl-C) or when its worker goes away. A script that
  calls :func:`run_sweep` without ``scheduler`` needs the usual
  ``if __name__ == "__main__":`` guard (the local workers are spawned);
- cell ``C`` of sweep ``NAME`` writes ``reports/<nb>/sweeps/<NAME>/<profile>/<C>/``
  (``C`` reads like ``k1=5,lambda1=1,seed=0``): ``params.json``, the executed
  notebook ``<nb>.ipynb``, and the notebook's own report (``metrics.json``,
  ``meta.json``, its tables and figures);
- how the report lands there: the cell runs with ``HASHSTUDY_REPORTS`` pointing
  at a private staging folder inside the cell's temporary folder
  (``<sweep>/.partial/<C>.<token>/``) and ``run`` set to the sweep's name, so the
  notebook's :class:`hashstudy.reporting.Report` writes
  ``<staging>/<nb>/runs/<NAME>/<profile>/`` (and ``meta.json`` records the sweep
  as the run). When the notebook succeeds, that report and the executed
  notebook are moved beside ``params.json`` and the temporary folder is renamed
  onto the cell's folder. The default report and ablation runs under
  ``reports/<nb>/runs/`` are never touched, and an interrupted or failed cell
  leaves no half-written file in a cell folder;
- a finished cell (``params.json`` with the same notebook, profile and
  parameters, the executed notebook and ``metrics.json``) is not run again
  (``--force`` reruns it); a failing cell does not stop the others: its folder
  then holds ``params.json``, ``error.txt`` (the end of papermill's output) and
  the notebook as far as it ran (``<nb>.failed.ipynb``), and it is retried on
  the next invocation;
- the end aggregates (see below), then prints a table of what ran, what was
  already done and what failed; the exit status is 1 if any cell failed. On
  Ctrl-C the running notebooks are stopped, finished cells stay as they are and
  the unfinished ones leave nothing behind.

Aggregation (also ``--aggregate-only``, which runs nothing), in the sweep's
profile folder:

``tidy.csv``
    one row per cell and metric: a column per swept parameter, ``seed``,
    ``metric``, ``value``;
``summary.csv``
    per parameter setting and metric: ``mean``, ``std`` (ddof=1) and ``n`` over
    the seeds, for the metrics named with ``--metric`` (repeatable, glob
    patterns such as ``cifar10/ddh/*/map@1000``; default: every metric);
``figures/<metric>.png``
    one per summarised metric (``/`` in the key becomes ``__``): mean ± std
    against the first swept parameter, one line per combination of the others
    (for a sweep over seeds only: the value of each seed, with the mean and
    the ± std band).

:func:`summary_metrics` turns a sweep over seeds only into
``{"<key>_mean", "<key>_std", "<key>_n"}`` entries that a notebook can add to its
report; the claims ledger (:mod:`hashstudy.claims`) widens its margins with
the ``<key>_std`` keys it finds.

Every worker needs the repository checked out and installed (``pip install -e
.``), the same data root and a cache and reports folder shared with the
machine that starts the sweep, at the same paths: the sweep passes its
``HASHSTUDY_*`` settings (``HASHSTUDY_DATA``, ``HASHSTUDY_CACHE``, ...) to every
cell and tells it where to write.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import itertools
import json
import math
import numbers
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from . import cache, config
from .regenerate import UsageError, check_params, compact_streams, parameters

_TOKEN = re.compile(r"^[A-Za-z0-9_.@+\-]+$")  # what Report accepts as a run name
_SAFE = re.compile(r"[^A-Za-z0-9_.@+\-]+")
RESERVED = {"seed": "use --seeds", "profile": "use --profile",
            "run": "the sweep sets it (its name)", "metric": "a column of the tidy table",
            "value": "a column of the tidy table"}
PARTIAL = ".partial"  # temporary cell folders, renamed into place when complete
FIGURES = "figures"
_MAX_SLUG = 150


# -- cells ------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One execution of a sweep: the swept parameters' values and the seed."""
    slug: str
    params: dict  # swept values, then "seed"
    swept: tuple


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _slug(params: Mapping, salt: bool = False) -> str:
    """A readable, filesystem-safe folder name for ``params`` (``k1=5,seed=0``).

    Characters other than letters, digits and ``_.@+-`` become ``_``; when that
    changed a value (or ``salt``: two cells would otherwise share a name), or
    the name is long, a short hash of the exact values is appended after ``~``."""
    parts, exact = [], True
    for name, value in params.items():
        text = _text(value)
        safe = _SAFE.sub("_", text).strip("_") or "_"
        exact &= safe == text
        parts.append(f"{name}={safe}")
    slug = ",".join(parts)
    if not exact or salt or len(slug) > _MAX_SLUG:
        digest = cache.key(json.loads(json.dumps(dict(params), default=str)))[:8]
        slug = f"{slug[:_MAX_SLUG]}~{digest}"
    return slug


def plan(notebook: Union[str, Path], grid: Mapping[str, Sequence], seeds: Sequence[int],
         folder: Optional[Path] = None) -> list[Cell]:
    """The cells of a sweep, checked: ``grid`` maps parameter names to typed values.

    Raises :class:`~hashstudy.regenerate.UsageError` for a name the notebook
    does not have (or one the sweep sets itself), a value of the wrong type, a
    value given twice, no values, or a notebook without a ``seed`` parameter."""
    nb = _notebook(notebook, folder)
    known = parameters(nb)
    if "seed" not in known:
        raise UsageError(f"{nb.stem} has no seed parameter: it cannot be swept over seeds")
    checked: dict[str, list] = {}
    for name, values in grid.items():
        if name in RESERVED:
            raise UsageError(f"{name} cannot be a grid parameter: {RESERVED[name]}")
        values = list(values)
        if not values:
            raise UsageError(f"grid parameter {name} has no values")
        typed = [check_params(nb, {name: v})[name] for v in values]
        checked[name] = _distinct(name, typed)
    seeds = _distinct("seed", [check_params(nb, {"seed": s})["seed"] for s in seeds])
    if not seeds:
        raise UsageError("no seeds given")
    swept = tuple(checked)
    cells = []
    for combo in itertools.product(*checked.values(), seeds):
        params = dict(zip(swept + ("seed",), combo))
        cells.append(Cell(_slug(params), params, swept))
    seen: dict[str, int] = {}
    for c in cells:
        seen[c.slug] = seen.get(c.slug, 0) + 1
    return [Cell(_slug(c.params, salt=True), c.params, swept) if seen[c.slug] > 1 else c
            for c in cells]


def _distinct(name: str, values: list) -> list:
    out = []
    for v in values:
        if any(type(v) is type(o) and v == o for o in out):
            raise UsageError(f"{name} value {_text(v)} is given twice")
        out.append(v)
    return out


def _notebook(notebook: Union[str, Path], folder: Optional[Path] = None) -> Path:
    from .regenerate import _notebook_path

    return _notebook_path(notebook, folder)


def sweep_folder(notebook: str, name: str, profile: str) -> Path:
    """``reports/<notebook>/sweeps/<name>/<profile>/`` (not created)."""
    return config.reports_dir() / notebook / "sweeps" / name / profile


def _record(stem: str, profile: str, name: str, cell: Cell) -> dict:
    """What ``params.json`` of ``cell`` holds."""
    return {"notebook": stem, "profile": profile, "sweep": name, "cell": cell.slug,
            "swept": list(cell.swept), "parameters": cell.params}


def _same_cell(stored: Mapping, record: Mapping) -> bool:
    def plain(x):
        return json.loads(json.dumps(x, sort_keys=True, default=str))
    return all(plain(stored.get(k)) == plain(record[k]) for k in ("notebook", "profile",
                                                                   "parameters"))


def finished(cell_dir: Path, record: Mapping) -> bool:
    """Whether ``cell_dir`` holds a successful run of exactly this cell."""
    try:
        stored = json.loads((cell_dir / "params.json").read_text())
    except (OSError, ValueError):
        return False
    return (_same_cell(stored, record) and (cell_dir / "metrics.json").is_file()
            and (cell_dir / f"{record['notebook']}.ipynb").is_file()
            and not (cell_dir / "error.txt").exists())


def _replace_dir(tmp: Path, final: Path) -> None:
    """Put the complete folder ``tmp`` at ``final`` by renames (same filesystem)."""
    old = None
    if final.exists():
        old = tmp.with_name(f"{tmp.name}.old")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- one cell, on a worker ----------------------------------------------------------

_CHILD = ("import sys; from hashstudy.sweep import _papermill_child; "
          "sys.exit(_papermill_child(sys.argv[1:]))")


def _papermill_child(args: list[str]) -> int:
    """papermill's command line, stopping itself (as on Ctrl-C) if its parent goes away.

    The cell's subprocess runs in its own session, so a Ctrl-C typed at the
    terminal reaches the sweep, which stops the cells itself; if the worker
    that started this process dies instead, this process would be orphaned."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # SIGINT stops it, as Ctrl-C
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)  # papermill shuts its kernel down
        time.sleep(30)
        os._exit(130)

    threading.Thread(target=watch, daemon=True).start()
    from papermill.cli import papermill as cli

    cli.main(args=args, prog_name="papermill")
    return 0


def _threads(given: Optional[int]) -> int:
    """BLAS/torch threads for one notebook on this worker.

    ``given`` by the local cluster; else ``HASHSTUDY_THREADS`` from the
    worker's environment; else this machine's cores divided by the task
    threads of every worker on the same host (each runs one cell at a time)."""
    if given:
        return given
    if os.environ.get("HASHSTUDY_THREADS", "").isdigit() and int(os.environ["HASHSTUDY_THREADS"]):
        return int(os.environ["HASHSTUDY_THREADS"])
    share = 1
    try:
        from distributed import get_client, get_worker

        worker = get_worker()
        share = worker.state.nthreads
        host = worker.address.rsplit(":", 1)[0]
        client = get_client()
        try:
            info = client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed: every worker by default
            info = client.scheduler_info()
        share = max(share, sum(w.get("nthreads", 1) for addr, w in info.get("workers", {}).items()
                               if addr.rsplit(":", 1)[0] == host))
    except Exception:  # not on a worker, or the scheduler did not answer
        pass
    return max(1, _cores() // max(1, share))


def _stop_signal(name: Optional[str]):
    """A callable that says whether the sweep asked its running cells to stop.

    The request is a Dask ``Event`` on the scheduler (asked at most every two
    seconds); off a worker, or without a scheduler to ask, nothing stops a cell."""
    event = None
    if name:
        try:
            from distributed import Event

            event = Event(name)
        except Exception:
            event = None
    last = 0.0

    def stopped() -> bool:
        nonlocal event, last
        if event is None or time.monotonic() - last < 2:
            return False
        last = time.monotonic()
        try:
            return bool(event.is_set())
        except Exception:
            event = None
            return False
    return stopped


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def _one_line(log: str) -> str:
    from .regenerate import _terminal_text

    lines = [ln.strip() for ln in _terminal_text(log).splitlines() if ln.strip()]
    found = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    return (found or lines or ["no output"])[-1][:300]


def run_cell(spec: Mapping) -> dict:
    """Run one cell (a Dask task); see the module docstring. Returns its outcome as a dict.

    ``spec`` holds plain values: ``notebook`` (path), ``profile``, ``run``
    (the sweep's name, or None when the notebook has no ``run`` parameter),
    ``params``, ``record`` (params.json), ``cell_dir``, ``tmp_dir``, ``threads``,
    ``env`` (settings for the notebook) and ``stop`` (the name of the Dask
    event that asks running cells to stop)."""
    t0 = time.time()
    nb = Path(spec["notebook"])
    final = Path(spec["cell_dir"])
    tmp = Path(f"{spec['tmp_dir']}.{uuid.uuid4().hex[:6]}")  # one per attempt
    cell = final.name

    def outcome(status, detail=""):
        return {"cell": cell, "status": status, "seconds": time.time() - t0, "detail": detail}

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cache.write_json(tmp / "params.json", spec["record"])
        stage = tmp / ".reports"
        running = tmp / f".{nb.stem}.running.ipynb"
        log_path = tmp / ".papermill.log"
        threads = str(_threads(spec.get("threads")))
        env = dict(os.environ, **spec.get("env", {}), HASHSTUDY_REPORTS=str(stage),
                   HASHSTUDY_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
                   NUMBA_NUM_THREADS=threads, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="10")
        injected = {"profile": spec["profile"], **spec["params"]}
        if spec.get("run"):
            injected["run"] = spec["run"]
        cmd = [sys.executable, "-c", _CHILD, str(nb), str(running), "--cwd", str(nb.parent),
               "--no-progress-bar", "--log-level", "WARNING"]
        for name, value in injected.items():
            cmd += ["-y", json.dumps({name: value})]
        stopped = _stop_signal(spec.get("stop"))
        if stopped():  # the sweep was interrupted before this cell started
            shutil.rmtree(tmp, ignore_errors=True)
            return outcome("interrupted")
        interrupted = False
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                while True:
                    try:
                        proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if stopped():
                        interrupted = True
                        break
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        if interrupted:
            shutil.rmtree(tmp, ignore_errors=True)
            return outcome("interrupted")
        text = log_path.read_text(errors="replace")
        report = _find_report(stage, nb.stem, spec.get("run"), spec["profile"]) \
            if proc.returncode == 0 else None
        if report is not None:
            compact_streams(running)
            os.replace(running, tmp / f"{nb.stem}.ipynb")
            for item in report.iterdir():
                os.replace(item, tmp / item.name)
            shutil.rmtree(stage, ignore_errors=True)
            log_path.unlink(missing_ok=True)
            _replace_dir(tmp, final)
            return outcome("ran", _skipped(final / "meta.json"))
        if proc.returncode == 0:
            why = (f"the notebook finished but wrote no metrics.json (its Report goes to "
                   f"HASHSTUDY_REPORTS/{nb.stem}/runs/<run>/<profile>/)")
        else:
            why = _one_line(text)
        _fail(tmp, final, nb.stem, f"papermill exited with status {proc.returncode}: {why}",
              text, running)
        return outcome("failed", why)
    except BaseException as err:  # keep the cell's record of what went wrong, then re-raise
        if isinstance(err, Exception):
            why = f"{type(err).__name__}: {err}"
            try:
                _fail(tmp, final, nb.stem, why, "", None)
            except Exception:
                shutil.rmtree(tmp, ignore_errors=True)
            return outcome("failed", why)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _skipped(meta: Path) -> str:
    """The parts a notebook recorded as skipped (``Report.skip``), as one note."""
    try:
        skipped = json.loads(meta.read_text()).get("skipped", {})
    except (OSError, ValueError, AttributeError):
        return ""
    return "; ".join(f"skipped {part}: {why}" for part, why in skipped.items())


def _find_report(stage: Path, stem: str, run: Optional[str], profile: str) -> Optional[Path]:
    expected = stage / stem / "runs" / run / profile if run else stage / stem / profile
    if (expected / "metrics.json").is_file():
        return expected
    found = sorted(stage.rglob("metrics.json")) if stage.is_dir() else []
    return found[0].parent if len(found) == 1 else None


def _fail(tmp: Path, final: Path, stem: str, why: str, log: str, running: Optional[Path]) -> None:
    """Turn the temporary folder into the cell's record of a failure, and put it in place."""
    from .regenerate import _terminal_text

    shutil.rmtree(tmp / ".reports", ignore_errors=True)
    (tmp / ".papermill.log").unlink(missing_ok=True)
    if running is not None and running.exists():
        try:
            compact_streams(running)
        except (OSError, ValueError):
            pass
        os.replace(running, tmp / f"{stem}.failed.ipynb")
    tail = "\n".join(_terminal_text(log).rstrip().splitlines()[-80:])
    cache.write_text(tmp / "error.txt", f"{why}\n\n{tail}\n" if tail else f"{why}\n")
    _replace_dir(tmp, final)


# -- the sweep ----------------------------------------------------------------------

@dataclass
class Outcome:
    cell: str
    status: str  # "ran", "done before", "failed", "interrupted"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Aggregation:
    """What :func:`aggregate` wrote, and the frames behind it."""
    folder: Path
    tidy_path: Path
    summary_path: Path
    figures: list
    tidy: object  # pandas.DataFrame
    summary: object
    cells: int
    missing: list = field(default_factory=list)


@dataclass
class SweepResult:
    folder: Path
    outcomes: list
    aggregation: Optional[Aggregation]

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o.status == "failed"]


def _check_name(name: str) -> str:
    if not _TOKEN.match(name) or set(name) == {"."}:
        raise UsageError(f"sweep name {name!r} must be a plain token (letters, digits, _.@+-)")
    return name


def default_name(grid: Mapping) -> str:
    """``k1_lambda1`` for a grid over k1 and lambda1; ``seeds`` for seeds only."""
    return "_".join(grid) or "seeds"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _forwarded_env() -> dict:
    """The ``HASHSTUDY_*`` settings a cell inherits from the sweep (paths made absolute)."""
    env = {}
    for key, value in os.environ.items():
        if not key.startswith("HASHSTUDY_") or key in ("HASHSTUDY_REPORTS", "HASHSTUDY_THREADS"):
            continue
        if key in ("HASHSTUDY_DATA", "HASHSTUDY_CACHE") and value:
            value = str(Path(value).expanduser().resolve())
        env[key] = value
    return env


@contextlib.contextmanager
def _lock(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"this sweep is already running in another process "
                             f"(lock: {folder / '.lock'})") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT meanwhile (in the main thread), so that processes started now ignore it.

    A Ctrl-C at the terminal reaches every process of its group; the sweep's
    worker processes leave it to the sweep, which stops their cells itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def _dask(scheduler: Optional[str], workers: Optional[int], cells: int, echo):
    """A Dask client: on ``scheduler``, or on a new LocalCluster. Yields (client, threads)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            echo(f"dask: scheduler {scheduler} ({n} worker(s) now)")
            yield client, None
        finally:
            client.close()
        return
    import logging

    cores = _cores()
    n = workers or max(1, min(cores, cells))
    threads = max(1, cores // n)
    with _sigint_ignored():  # the workers inherit it: Ctrl-C stops the sweep, not them
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    echo(f"dask: local cluster of {n} worker process(es) x 1 thread; "
         f"{threads} compute thread(s) per notebook")
    try:
        yield client, threads
    finally:
        client.close()
        cluster.close()


def run_sweep(notebook: Union[str, Path], grid: Mapping[str, Sequence], seeds: Optional[Sequence[int]],
              profile: str, name: Optional[str], scheduler: Optional[str] = None,
              workers: Optional[int] = None, metrics: Optional[Sequence[str]] = None,
              force: bool = False, *, folder: Optional[Path] = None, progress: bool = True,
              echo=print) -> SweepResult:
    """Run a sweep and aggregate it; see the module docstring.

    ``grid`` maps parameter names to lists of typed values (``{"k1": [5, 15]}``),
    ``seeds`` lists seeds (None: the notebook's default seed), ``name`` names the
    sweep (None: :func:`default_name`), ``scheduler`` is the address of an
    existing Dask scheduler (else a LocalCluster of ``workers`` processes),
    ``metrics`` the glob patterns of the metrics to summarise, ``force`` reruns
    finished cells, ``folder`` is the notebooks folder. Raises
    :class:`~hashstudy.regenerate.UsageError` before anything runs when the
    sweep is malformed; a failing cell is reported in the result, not raised."""
    config.check_profile(profile)
    nb = _notebook(notebook, folder)
    grid = dict(grid or {})
    name = _check_name(name or default_name(grid))
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if workers is not None and scheduler:
        raise UsageError("--workers sizes the local cluster: not with --scheduler")
    known = parameters(nb)
    if seeds is None and "seed" in known:
        seeds = [known["seed"].default]
    cells = plan(nb, grid, seeds or [], folder)
    sweep_dir = config.reports_dir(nb.stem, "sweeps", name, profile)
    run = name if "run" in known else None
    token = uuid.uuid4().hex[:8]
    partial = sweep_dir / PARTIAL
    outcomes: list[Outcome] = []
    from .sweep import run_cell as task  # by its module's name, also under ``python -m``

    with _lock(sweep_dir):
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted sweep
        pending = []
        for cell in cells:
            record = _record(nb.stem, profile, name, cell)
            if not force and finished(sweep_dir / cell.slug, record):
                outcomes.append(Outcome(cell.slug, "done before"))
                continue
            pending.append({"notebook": str(nb.resolve()), "profile": profile, "run": run,
                            "params": cell.params, "record": record,
                            "cell_dir": str(sweep_dir / cell.slug),
                            "tmp_dir": str(partial / f"{cell.slug}.{token}"),
                            "env": _forwarded_env(), "stop": f"hashstudy-sweep-stop-{token}"})
        echo(f"sweep {name} of {nb.stem} at {profile}: {len(cells)} cell(s), "
             f"{len(cells) - len(pending)} already done -> {sweep_dir}")
        if pending:
            outcomes += _execute(task, pending, scheduler, workers, progress, echo, partial, token)
        agg = aggregate(nb.stem, name, profile, metrics, cells=cells, folder=folder, echo=echo)
    order = {c.slug: i for i, c in enumerate(cells)}
    outcomes.sort(key=lambda o: order.get(o.cell, len(order)))
    return SweepResult(sweep_dir, outcomes, agg)


def _execute(task, pending: list, scheduler, workers, progress, echo, partial: Path,
             token: str) -> list[Outcome]:
    from distributed import Event, as_completed, wait
    from tqdm.auto import tqdm

    out: list[Outcome] = []
    with _dask(scheduler, workers, len(pending), echo) as (client, threads):
        futures = {}
        for spec in pending:
            spec = dict(spec, threads=threads)
            key = f"sweep-cell-{Path(spec['cell_dir']).name}-{token}"
            futures[client.submit(task, spec, key=key, pure=False, retries=0)] = spec
        bar = tqdm(total=len(futures), desc="cells", unit="cell", disable=not progress,
                   file=sys.stderr)
        say = tqdm.write if progress else echo
        try:
            for future in as_completed(futures):
                spec = futures[future]
                cell = Path(spec["cell_dir"]).name
                try:
                    res = future.result()
                    got = Outcome(res["cell"], res["status"], res["seconds"], res["detail"])
                except Exception as err:  # the task could not run (worker died, import error)
                    why = f"{type(err).__name__}: {err}"[:300]
                    got = Outcome(cell, "failed", 0.0, why)
                    _record_failure(spec, why)
                out.append(got)
                bar.update()
                tail = f": {got.detail}" if got.detail else ""
                say(f"  {got.cell}: {got.status} ({got.seconds:.0f} s){tail}")
        except KeyboardInterrupt:
            bar.close()
            echo("interrupted: stopping the running cells ...")
            left = [f for f in futures if not f.done()]
            with contextlib.suppress(Exception):  # running cells stop their notebooks
                Event(f"hashstudy-sweep-stop-{token}", client=client).set()
            with contextlib.suppress(Exception):
                wait(left, timeout=30)
            with contextlib.suppress(Exception):  # and the others never start
                client.cancel(left)
            for leftover in partial.glob(f"*.{token}*"):  # what a stopped cell may have left
                shutil.rmtree(leftover, ignore_errors=True)
            with contextlib.suppress(OSError):
                partial.rmdir()
            echo("interrupted: finished cells are intact; unfinished cells left no files")
            raise
        finally:
            bar.close()
    return out


def _record_failure(spec: Mapping, why: str) -> None:
    tmp = Path(spec["tmp_dir"])
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cache.write_json(tmp / "params.json", spec["record"])
    _fail(tmp, Path(spec["cell_dir"]), Path(spec["notebook"]).stem,
          f"the cell's task failed: {why}", "", None)


def outcome_table(outcomes: Sequence[Outcome]) -> str:
    """The end-of-sweep table: every cell, its status, time and notes, then counts."""
    width = max([len(o.cell) for o in outcomes] + [4])
    lines = [f"{'cell':<{width}}  {'status':<12} {'time':>7}  notes"]
    for o in outcomes:
        lines.append(f"{o.cell:<{width}}  {o.status:<12} {o.seconds:>6.0f}s  {o.detail}".rstrip())
    counts = {s: sum(o.status == s for o in outcomes)
              for s in ("ran", "done before", "failed", "interrupted")}
    lines.append(f"{counts['ran']} ran, {counts['done before']} already done, "
                 f"{counts['failed']} failed"
                 + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else ""))
    return "\n".join(lines)


# -- aggregation --------------------------------------------------------------------

def _load_cells(sweep_dir: Path, stem: str, cells: Optional[Sequence[Cell]], profile: str,
                name: str):
    """(records, metrics) of the finished cells, and the slugs of the missing ones."""
    found, missing = [], []
    if cells is not None:
        for cell in cells:
            d = sweep_dir / cell.slug
            rec = _record(stem, profile, name, cell)
            if finished(d, rec):
                found.append((json.loads((d / "params.json").read_text()),
                              json.loads((d / "metrics.json").read_text())))
            else:
                missing.append(cell.slug)
        return found, missing
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            rec = json.loads((d / "params.json").read_text())
        except (OSError, ValueError):
            continue
        if finished(d, rec):
            found.append((rec, json.loads((d / "metrics.json").read_text())))
        else:
            missing.append(d.name)
    found.sort(key=lambda rm: _sort_key(rm[0]))
    return found, missing


def _sort_key(record: Mapping):
    def one(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return (0, float(v), "")
        return (1, 0.0, json.dumps(v, sort_keys=True))
    p = record.get("parameters", {})
    return tuple(one(p.get(n)) for n in list(record.get("swept", [])) + ["seed"])


def _column(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _selected(all_metrics: Iterable[str], patterns: Optional[Sequence[str]], echo) -> list[str]:
    all_metrics = list(dict.fromkeys(all_metrics))
    if not patterns:
        return all_metrics
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(m, pat) for m in all_metrics):
            echo(f"warning: --metric {pat} matches no metric of the sweep")
    return [m for m in all_metrics if any(fnmatch.fnmatchcase(m, p) for p in patterns)]


def tidy_frame(found: Sequence) -> tuple:
    """The tidy table of ``(params.json, metrics.json)`` pairs, and the swept names."""
    import pandas as pd

    swept: list[str] = []
    for rec, _ in found:
        swept += [n for n in rec.get("swept", []) if n not in swept]
    rows = []
    for rec, metrics in found:
        p = rec["parameters"]
        base = {n: _column(p.get(n)) for n in swept}
        base["seed"] = p.get("seed")
        for key, value in metrics.items():
            rows.append({**base, "metric": key,
                         "value": float("nan") if value is None else float(value)})
    return pd.DataFrame(rows, columns=swept + ["seed", "metric", "value"]), swept


def summarise(tidy, swept: Sequence[str], metrics: Sequence[str]):
    """Mean, standard deviation (ddof=1) and count over seeds, per setting and metric."""
    import pandas as pd

    frame = tidy[tidy["metric"].isin(list(metrics))]
    cols = list(swept) + ["metric", "mean", "std", "n"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    groups = frame.groupby(list(swept) + ["metric"], sort=False, dropna=False)["value"]
    out = groups.agg(mean="mean", std="std", n="count").reset_index()  # pandas' std: ddof=1
    rank = {m: i for i, m in enumerate(metrics)}
    out = out.assign(_rank=out["metric"].map(rank)).sort_values("_rank", kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)[cols]


def _csv(path: Path, frame) -> Path:
    return cache.write_text(path, frame.to_csv(index=False))


def aggregate(notebook: str, name: str, profile: str, metrics: Optional[Sequence[str]] = None,
              cells: Optional[Sequence[Cell]] = None, folder: Optional[Path] = None,
              echo=print) -> Aggregation:
    """Write ``tidy.csv``, ``summary.csv`` and ``figures/`` of a sweep from its cell folders.

    ``cells`` restricts it to those cells (the others are listed as missing);
    by default every finished cell in the sweep's folder counts. Runs nothing."""
    stem = Path(notebook).stem if str(notebook).endswith(".ipynb") else str(notebook)
    sweep_dir = sweep_folder(stem, name, profile)
    if not sweep_dir.is_dir():
        raise UsageError(f"no sweep {name!r} of {stem} at profile {profile} "
                         f"({sweep_dir} does not exist){_listing(stem)}")
    found, missing = _load_cells(sweep_dir, stem, cells, profile, name)
    tidy, swept = tidy_frame(found)
    chosen = _selected(tidy["metric"], metrics, echo)
    summary = summarise(tidy, swept, chosen)
    tidy_path = _csv(sweep_dir / "tidy.csv", tidy)
    summary_path = _csv(sweep_dir / "summary.csv", summary)
    figures = _figures(sweep_dir, tidy, summary, swept, chosen)
    settings = len(summary.drop_duplicates(subset=list(swept))) if swept and len(summary) else 1
    echo(f"aggregated {len(found)} cell(s) ({settings} setting(s)), {len(chosen)} metric(s): "
         f"{tidy_path.name}, {summary_path.name}, {len(figures)} figure(s) in {sweep_dir}")
    if missing:
        echo(f"not aggregated (failed or not run): {', '.join(missing)}")
    return Aggregation(sweep_dir, tidy_path, summary_path, figures, tidy, summary, len(found),
                       missing)


def _listing(stem: str) -> str:
    root = config.reports_dir() / stem / "sweeps"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return f"; sweeps of {stem}: {', '.join(names)}" if names else ""


def figure_name(metric: str) -> str:
    return _SAFE.sub("_", metric.replace("/", "__")) + ".png"


def _numeric(values) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
               and not math.isnan(v) for v in values)


def _figures(sweep_dir: Path, tidy, summary, swept: Sequence[str], chosen: Sequence[str]) -> list:
    """One PNG per metric in a fresh ``figures/`` folder, swapped in when all are written."""
    from matplotlib.figure import Figure

    tmp = sweep_dir / PARTIAL / f"{FIGURES}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    written = []
    try:
        for metric in chosen:
            fig = Figure(figsize=(6.0, 4.0))
            ax = fig.add_subplot()
            if swept:
                _plot_setting(ax, summary[summary["metric"] == metric], swept)
            else:
                _plot_seeds(ax, tidy[tidy["metric"] == metric])
            ax.set_title(metric, fontsize=10)
            ax.grid(alpha=0.3)
            with cache.atomic_path(tmp / figure_name(metric)) as path:
                fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
            written.append(sweep_dir / FIGURES / figure_name(metric))
        _replace_dir(tmp, sweep_dir / FIGURES)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.parent.rmdir()  # only if no cell is running
    return written


def _plot_setting(ax, rows, swept: Sequence[str]) -> None:
    x, others = swept[0], list(swept[1:])
    xs = list(dict.fromkeys(rows[x]))
    numeric = _numeric(xs)
    where = {v: (v if numeric else i) for i, v in enumerate(xs)}
    groups = rows.groupby(others, sort=False, dropna=False) if others else [((), rows)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values(x) if numeric else g
        label = ", ".join(f"{n}={_text(v)}" for n, v in zip(others, key)) or None
        ax.errorbar([where[v] for v in g[x]], g["mean"], yerr=g["std"].fillna(0.0),
                    marker="o", capsize=3, label=label)
    if numeric:
        positive = [float(v) for v in xs if v > 0]
        if len(positive) == len(xs) and max(positive) / min(positive) >= 100:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(xs)), [_text(v) for v in xs])
    n = sorted(set(int(v) for v in rows["n"]))
    ax.set_xlabel(x)
    ax.set_ylabel(f"mean ± std over seeds (n={'/'.join(map(str, n))})")
    if others:
        ax.legend(fontsize=8)


def _plot_seeds(ax, rows) -> None:
    from matplotlib.ticker import MaxNLocator

    values = rows["value"].astype(float)
    mean, std = values.mean(), values.std(ddof=1)
    ax.plot(rows["seed"], values, "o", label="seeds")
    ax.axhline(mean, color="k", lw=1, label=f"mean {mean:.4g}")
    if len(values) > 1 and not math.isnan(std):
        ax.axhspan(mean - std, mean + std, color="k", alpha=0.1, label=f"± std {std:.2g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seed")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)


def summary_metrics(notebook: str, name: str, profile: str = "quick",
                    metrics: Optional[Sequence[str]] = None) -> dict:
    """Seed spread of a sweep over seeds only, as report keys.

    Returns ``{"<key>_mean": mean, "<key>_std": std (ddof=1; NaN for one seed),
    "<key>_n": count}`` for every metric of the sweep's finished cells matching
    ``metrics`` (glob patterns; default all), e.g. for ``report.add(k, v)`` in a
    notebook, so the claims ledger widens its margins with the ``_std`` keys::

        spread = sweep.summary_metrics("04_ddh", "seeds", "quick", ["cifar10/ddh/*/map@1000"])
        for key, value in spread.items():
            report.add(key, value)

    Raises ``ValueError`` if the sweep varies anything besides the seed, or has
    no finished cell."""
    stem = Path(notebook).stem if str(notebook).endswith(".ipynb") else str(notebook)
    sweep_dir = sweep_folder(stem, name, profile)
    if not sweep_dir.is_dir():
        raise UsageError(f"no sweep {name!r} of {stem} at profile {profile} ({sweep_dir})")
    found, _ = _load_cells(sweep_dir, stem, None, profile, name)
    if not found:
        raise ValueError(f"sweep {name!r} of {stem} at {profile} has no finished cell")
    tidy, swept = tidy_frame(found)
    if swept:
        raise ValueError(f"sweep {name!r} varies {', '.join(swept)}: summary_metrics needs a "
                         "sweep over seeds only")
    chosen = _selected(tidy["metric"], metrics, lambda *a: None)
    out = {}
    for row in summarise(tidy, [], chosen).itertuples(index=False):
        out[f"{row.metric}_mean"] = float(row.mean)
        out[f"{row.metric}_std"] = float(row.std)
        out[f"{row.metric}_n"] = int(row.n)
    return out


# -- command line -------------------------------------------------------------------

def split_values(text: str) -> list[str]:
    """``5,15,30`` -> ``['5', '15', '30']``; commas inside brackets or quotes do not split
    (``[16,32],[64]`` is two lists)."""
    out, depth, quote, buf = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    out.append("".join(buf).strip())
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m hashstudy.sweep", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook", help="the notebook, e.g. 04_ddh")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a parameter and its values (repeatable); values are converted to "
                        "the type of the parameter's default, lists as [16,32]")
    p.add_argument("--seeds", help="comma-separated seeds (default: the notebook's seed)")
    p.add_argument("--profile", default="quick", choices=config.PROFILES,
                   help="smoke, quick (default) or paper")
    p.add_argument("--name", help="the sweep's name (default: the grid's names joined by _)")
    p.add_argument("--metric", action="append", default=[], metavar="KEY",
                   help="a metric key or glob pattern to summarise and plot (repeatable; "
                        "default: all)")
    p.add_argument("--workers", type=int, help="worker processes of the local cluster "
                                               "(default: one per core, at most one per cell)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--force", action="store_true", help="rerun finished cells too")
    p.add_argument("--aggregate-only", action="store_true",
                   help="only re-aggregate the finished cells (of --grid/--seeds if given)")
    p.add_argument("--notebooks", type=Path, metavar="DIR",
                   help="the notebooks folder (default: notebooks/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclass
class Command:
    notebook: Path
    grid: dict
    seeds: Optional[list]
    profile: str
    name: str
    metrics: list
    workers: Optional[int]
    scheduler: Optional[str]
    force: bool
    aggregate_only: bool
    folder: Optional[Path]
    progress: bool
    cells: Optional[list] = None


def parse_command(argv: Sequence[str]) -> Command:
    """Parse and check a sweep command without running anything (:class:`UsageError`)."""
    args = _parser().parse_args(list(argv))
    folder = args.notebooks
    nb = _notebook(args.notebook, folder)
    grid: dict = {}
    for item in args.grid:
        pname, eq, values = item.partition("=")
        pname = pname.strip()
        if not eq or not pname:
            raise UsageError(f"--grid takes NAME=V1,V2,..., got {item!r}")
        if pname in grid:
            raise UsageError(f"grid parameter {pname} is given twice")
        if pname in RESERVED:
            raise UsageError(f"{pname} cannot be a grid parameter: {RESERVED[pname]}")
        texts = split_values(values)
        if any(t == "" for t in texts):
            raise UsageError(f"--grid {item!r} has an empty value")
        grid[pname] = [check_params(nb, [(pname, t)])[pname] for t in texts]
    seeds = None
    if args.seeds is not None:
        texts = split_values(args.seeds)
        if "seed" not in parameters(nb):
            raise UsageError(f"{nb.stem} has no seed parameter")
        if any(t == "" for t in texts):
            raise UsageError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
        seeds = [check_params(nb, [("seed", t)])["seed"] for t in texts]
    name = _check_name(args.name or default_name(grid))
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers sizes the local cluster: not with --scheduler")
    cmd = Command(nb, grid, seeds, args.profile, name, args.metric, args.workers,
                  args.scheduler, args.force, args.aggregate_only, folder, not args.no_progress)
    if args.aggregate_only:
        if grid or seeds is not None:
            known = parameters(nb)
            default = [known["seed"].default] if "seed" in known else []
            cmd.cells = plan(nb, grid, seeds if seeds is not None else default, folder)
    else:
        known = parameters(nb)
        plan(nb, grid, seeds if seeds is not None else
             ([known["seed"].default] if "seed" in known else []), folder)
    return cmd


def main(argv=None) -> int:
    from . import sweep as this  # the module by its name, also under ``python -m``

    try:
        cmd = parse_command(sys.argv[1:] if argv is None else list(argv))
        if cmd.aggregate_only:
            agg = this.aggregate(cmd.notebook.stem, cmd.name, cmd.profile, cmd.metrics,
                                 cells=cmd.cells, folder=cmd.folder)
            return 0 if agg.cells else 1
        t0 = time.time()
        result = this.run_sweep(cmd.notebook, cmd.grid, cmd.seeds, cmd.profile, cmd.name,
                                scheduler=cmd.scheduler, workers=cmd.workers,
                                metrics=cmd.metrics, force=cmd.force, folder=cmd.folder,
                                progress=cmd.progress)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print()
    print(outcome_table(result.outcomes))
    print(f"total wall time: {time.time() - t0:.0f} s; results in {result.folder}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
