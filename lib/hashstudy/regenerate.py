"""Regenerate the study's reports: every notebook through papermill, then the summary.

Usage (``make reports`` runs the first form)::

    python -m hashstudy.regenerate --profile quick --jobs 2
    python -m hashstudy.regenerate --only 01_dsth_mm2015 -p k 50 --run k50
    python -m hashstudy.regenerate --force            # ignore the up-to-date check

What it does:

- runs ``notebooks/[0-9]*.ipynb`` (all but ``99_summary``) at the chosen
  profile, ``--jobs`` at a time, each in its own papermill process with the
  machine's cores shared between them; ``99_summary`` runs last;
- writes each executed notebook beside its report
  (``reports/<notebook>/<profile>/<notebook>.ipynb``, or ``runs/<run>/`` for a
  named ablation run, which never overwrites the profile's report);
- skips a notebook whose inputs have not changed since its last successful
  run: the notebook file, the library's source, the parameters, and a
  fingerprint of the data root (names, sizes and modification times of its
  files two levels deep);
- keeps going when a notebook fails, and ends with a table of what ran, what
  was skipped (and why, including parts a notebook skipped itself, such as a
  dataset that is not present) and what failed; the exit status is 1 if
  anything failed;
- on Ctrl-C stops the running notebooks; every report already written stays
  intact (all files are written atomically) and no partial executed notebook
  is left behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import cache, config

SUMMARY = "99_summary"


@dataclass
class Outcome:
    notebook: str
    status: str  # "ran", "up to date", "failed", "interrupted"
    seconds: float = 0.0
    detail: str = ""
    skipped_parts: dict = field(default_factory=dict)


def notebooks(only: Optional[list[str]] = None, folder: Optional[Path] = None) -> list[Path]:
    """The study's notebooks in run order (summary last), optionally filtered by name."""
    folder = Path(folder) if folder else config.repo_root() / "notebooks"
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        names = {p.stem: p for p in found}
        for name in only:
            config.check_choice("notebook", name, names)
        found = [names[n] for n in only]
    return sorted(found, key=lambda p: (p.stem == SUMMARY, p.stem))


def _data_fingerprint() -> list:
    root = config.data_root()
    entries = []
    if root.is_dir():
        for first in sorted(root.iterdir()):
            if first.name == "cache":
                continue
            children = sorted(first.iterdir()) if first.is_dir() else [first]
            for child in children:
                st = child.stat()
                entries.append([str(child.relative_to(root)), st.st_size, int(st.st_mtime)])
    return [str(root), entries]


def _library_digest() -> str:
    h = hashlib.sha256()
    lib = Path(__file__).resolve().parent
    for path in sorted(lib.rglob("*")):
        if path.suffix in {".py", ".csv", ".json"} and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(lib)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def inputs_key(nb: Path, profile: str, params: dict, run: Optional[str]) -> str:
    return cache.key(hashlib.sha256(nb.read_bytes()).hexdigest(), _library_digest(), profile,
                     params, run, _data_fingerprint())


def output_dir(nb: Path, profile: str, run: Optional[str]) -> Path:
    return config.reports_dir(nb.stem, "runs", run) if run else config.reports_dir(nb.stem, profile)


def _state_path(nb: Path, profile: str, run: Optional[str]) -> Path:
    return output_dir(nb, profile, run) / ".inputs.json"


def up_to_date(nb: Path, profile: str, params: dict, run: Optional[str]) -> bool:
    state = _state_path(nb, profile, run)
    if not state.exists() or not (output_dir(nb, profile, run) / f"{nb.stem}.ipynb").exists():
        return False
    try:
        return json.loads(state.read_text()).get("key") == inputs_key(nb, profile, params, run)
    except (json.JSONDecodeError, OSError):
        return False


def _skipped_parts(nb: Path, profile: str, run: Optional[str]) -> dict:
    meta = output_dir(nb, profile, run) / "meta.json"
    try:
        return json.loads(meta.read_text()).get("skipped", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _terminal_text(text: str) -> str:
    """What a terminal shows for ``text``: each line keeps what follows its last carriage
    return, cursor escapes go, and lines left empty by them are dropped."""
    lines = []
    for line in _ANSI.sub("", text).split("\n"):
        shown = line.rstrip("\r").rsplit("\r", 1)[-1]
        if shown.strip() or line == "":
            lines.append(shown)
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out)


def compact_streams(path: Path) -> None:
    """Rewrite an executed notebook's text streams as a terminal would show them.

    Progress bars redraw themselves with carriage returns; stored verbatim, every
    redraw stays in the notebook (megabytes per report). Jupyter renders the same
    final text either way."""
    nb = json.loads(Path(path).read_text())
    changed = False
    for cell in nb.get("cells", []):
        merged = []  # consecutive writes to one stream form one output, as Jupyter shows them
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                last = merged[-1] if merged else None
                if last is not None and last.get("output_type") == "stream" \
                        and last["name"] == out["name"]:
                    last["text"] += text
                    changed = True
                    continue
                out = dict(out, text=text)
            merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and ("\r" in out["text"] or "\x1b[" in out["text"]):
                out["text"] = _terminal_text(out["text"])
                changed = True
        if "outputs" in cell:
            cell["outputs"] = merged
    if changed:
        cache.write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _papermill_command(nb: Path, out: Path, profile: str, params: dict, run: Optional[str]) -> list:
    cmd = [sys.executable, "-m", "papermill", str(nb), str(out), "--cwd", str(nb.parent),
           "-p", "profile", profile, "--no-progress-bar", "--log-level", "WARNING"]
    if run:
        cmd += ["-p", "run", run]
    for name, value in params.items():
        cmd += ["-y", json.dumps({name: value})]
    return cmd


def regenerate(profile: str = "quick", jobs: int = 2, only: Optional[list[str]] = None,
               params: Optional[dict] = None, run: Optional[str] = None, force: bool = False,
               echo=print, folder: Optional[Path] = None) -> list[Outcome]:
    """Run the notebooks; see the module docstring. Returns one :class:`Outcome` each."""
    config.check_profile(profile)
    params = dict(params or {})
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    todo = notebooks(only, folder)
    main = [nb for nb in todo if nb.stem != SUMMARY]
    summary = [nb for nb in todo if nb.stem == SUMMARY]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), HASHSTUDY_THREADS=str(threads),
               PYTHONUNBUFFERED="1", TQDM_MININTERVAL="10")  # few progress updates in reports
    outcomes: list[Outcome] = []
    running: dict = {}
    total = len(todo)
    started = 0

    def start(nb: Path) -> None:
        nonlocal started
        started += 1
        if not force and up_to_date(nb, profile, params, run):
            outcomes.append(Outcome(nb.stem, "up to date", detail="inputs unchanged since last run",
                                    skipped_parts=_skipped_parts(nb, profile, run)))
            echo(f"[{started}/{total}] {nb.stem}: up to date, skipped")
            return
        out_dir = output_dir(nb, profile, run)
        tmp = out_dir / f".{nb.stem}.running.ipynb"
        log = open(out_dir / f".{nb.stem}.log", "w")
        proc = subprocess.Popen(_papermill_command(nb, tmp, profile, params, run), env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        running[nb] = (proc, tmp, log, time.time())
        echo(f"[{started}/{total}] {nb.stem}: running (profile {profile}"
             f"{', run ' + run if run else ''})")

    def finish(nb: Path) -> None:
        proc, tmp, log, t0 = running.pop(nb)
        log.close()
        seconds = time.time() - t0
        out_dir = output_dir(nb, profile, run)
        log_path = out_dir / f".{nb.stem}.log"
        if proc.returncode == 0:
            compact_streams(tmp)
            os.replace(tmp, out_dir / f"{nb.stem}.ipynb")
            cache.write_json(_state_path(nb, profile, run),
                             {"key": inputs_key(nb, profile, params, run)})
            log_path.unlink(missing_ok=True)
            outcomes.append(Outcome(nb.stem, "ran", seconds,
                                    skipped_parts=_skipped_parts(nb, profile, run)))
            echo(f"      {nb.stem}: done in {seconds:.0f} s")
        else:
            tmp.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            outcomes.append(Outcome(nb.stem, "failed", seconds,
                                    detail=f"see {log_path}: " + " | ".join(tail)[-600:]))
            echo(f"      {nb.stem}: FAILED after {seconds:.0f} s (log: {log_path})")

    def drain(limit: int) -> None:
        while len(running) >= limit:
            for nb, (proc, *_rest) in list(running.items()):
                if proc.poll() is not None:
                    finish(nb)
            if len(running) >= limit:
                time.sleep(0.5)

    try:
        for nb in main:
            drain(jobs)
            start(nb)
        drain(1)
        for nb in summary:
            start(nb)
            drain(1)
            if outcomes[-1].status in ("ran", "up to date") and not run:
                publish_summary(profile, output_dir(nb, profile, run) / f"{nb.stem}.ipynb", echo)
    except KeyboardInterrupt:
        for nb, (proc, tmp, log, t0) in list(running.items()):
            proc.send_signal(signal.SIGINT)
        for nb, (proc, tmp, log, t0) in list(running.items()):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            tmp.unlink(missing_ok=True)
            outcomes.append(Outcome(nb.stem, "interrupted", time.time() - t0))
        running.clear()
        echo("interrupted: finished reports are intact; unfinished notebooks left no files")
        raise
    return outcomes


def summary_page(profile: str) -> Path:
    """Where the static summary page of ``profile`` is written."""
    name = "summary.html" if profile == "quick" else f"summary-{profile}.html"
    return config.reports_dir() / name


def publish_summary(profile: str, executed: Path, echo=print) -> None:
    """Render the executed summary notebook to HTML and refresh the README's results."""
    from . import summary

    page = summary.render_html(executed, summary_page(profile))
    echo(f"      summary page: {page}")
    if profile == "quick":
        changed = summary.update_readme(profile)
        echo(f"      README results section {'updated' if changed else 'unchanged'}")


def summary_table(outcomes: list[Outcome]) -> str:
    lines = [f"{'notebook':<24} {'status':<12} {'time':>7}  notes"]
    for o in outcomes:
        notes = [o.detail] if o.detail else []
        notes += [f"skipped {part}: {why}" for part, why in o.skipped_parts.items()]
        lines.append(f"{o.notebook:<24} {o.status:<12} {o.seconds:>6.0f}s  {'; '.join(notes)}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ran", "up to date", "failed")}
    lines.append(f"{counts['ran']} ran, {counts['up to date']} up to date, {counts['failed']} failed")
    return "\n".join(lines)


def _parse_params(pairs: list[list[str]]) -> dict:
    out = {}
    for name, raw in pairs:
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hashstudy.regenerate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="smoke, quick (default) or paper")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these notebooks")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a parameter (VALUE as JSON)")
    parser.add_argument("--run", help="name of an ablation run: outputs go to reports/<nb>/runs/<run>/")
    parser.add_argument("--force", action="store_true", help="run even if inputs are unchanged")
    args = parser.parse_args(argv)
    params = _parse_params(args.param)
    if (params or args.run) and not args.only:
        parser.error("parameter overrides and --run need --only NOTEBOOK")
    if params and not args.run:
        parser.error("parameter overrides need --run NAME, so the default report is not overwritten")
    t0 = time.time()
    try:
        outcomes = regenerate(args.profile, args.jobs, args.only, params, args.run, args.force)
    except KeyboardInterrupt:
        return 130
    print()
    print(summary_table(outcomes))
    print(f"total wall time: {time.time() - t0:.0f} s")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
