"""Paper-scale runs that fit this machine, where a notebook's whole ``paper`` profile does not.

A notebook's ``paper`` profile repeats its paper's protocol in full. Where
that does not fit two CPU cores within a working day, this module names the
largest part of it that does: the ``paper`` profile's sizes and iteration
counts, restricted by the notebook's own parameters to the part the claims
in question are decided on. For the journal DSTH (05) the whole profile
trains 4 configurations x 2 backbones x 5 code lengths of SimpleNet for
60,000 + 5,000 + 5,000 iterations each; the scale run trains the main one.
For the latent-layer CNN (02) the scale run is the CIFAR-10 half.

A run can also stay at a smaller profile's sizes and change what the paper's
setting changes: DDH (04) trains end to end, so its ``finetune-top`` run is the
``quick`` profile with Lite0's top block stage trained by the DDH loss, where the
``quick`` report hashes frozen features. Such a run is marked
``closer_than_report`` and decides before that profile's own report.

Each entry is an ordinary named run of :mod:`hashstudy.regenerate`
(``reports/<notebook>/runs/<run>/paper/``). The claims ledger reads it after
the profile's own report and before any smaller profile
(:func:`hashstudy.claims.evaluate` with ``largest=True``; a run marked
``closer_than_report`` before the profile's report), and the verdict's
``profile`` column names it, e.g. ``paper (run main-config)``.

Usage::

    python -m hashstudy.scale                    # list the runs, their reports, trainings in progress
    python -m hashstudy.scale 05_dsth_tcyb2018   # run (or resume) one; same as its regenerate line

A run interrupted part-way resumes from its per-epoch checkpoints when the
same command starts again (the thread count, set by ``jobs``, is part of the
trained weights' key, so it is fixed here).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import config

__all__ = ["ScaleRun", "SCALE_RUNS", "runs_for", "report_folder", "command", "progress_text",
           "main"]


@dataclass(frozen=True)
class ScaleRun:
    """One named run of a notebook at (part of) a larger profile."""

    notebook: str
    run: str
    profile: str
    params: dict = field(default_factory=dict)  # the notebook parameters that restrict it
    jobs: int = 2  # regenerate's --jobs: the machine's cores // jobs threads
    why: str = ""  # what is left out and why, in one sentence
    # True when the run follows the paper's setting more closely than the profile's own
    # report (it fine-tunes where that report keeps the backbone frozen): it then decides the
    # claims whose keys it holds before that report does, not after it
    closer_than_report: bool = False
    # the claims (ledger ids) it may decide; empty: every claim of its notebook whose keys it
    # holds. A run that changes one part of a notebook names the claims on that part, so the
    # others keep the profile's report (and its seed sweep)
    claims: tuple = ()

    @property
    def label(self) -> str:
        """How the ledger names it: ``"paper (run main-config)"``."""
        return f"{self.profile} (run {self.run})"


SCALE_RUNS: tuple[ScaleRun, ...] = (
    ScaleRun(
        notebook="02_latent_layer_cnn", run="cifar10", profile="paper",
        params={"dataset": ""},
        why="the paper profile's CIFAR-10 part (224-px maps, Lite0's top stage fine-tuned with "
            "F7, H and F8 for 10 epochs on all 50,000 training images, CNNH on 5,000 images for "
            "20 epochs) without the MNIST part, whose claims the quick profile already decides "
            "within the paper's tolerances",
    ),
    ScaleRun(
        notebook="05_dsth_tcyb2018", run="main-config", profile="paper",
        params={"backbones": ["efficientnet_lite0"], "configs": ["slice_batchnorm"],
                "sweep_bits": [48], "fit_bits": [48], "extra_datasets": [],
                "sections": ["table3", "without_labels"], "sth_train": 10000},
        jobs=1,  # one notebook, all cores: SimpleNet's step takes half the time on 2 threads
        why="the paper profile's split (all 50,000 CIFAR-10 training images), iteration counts "
            "(60,000 + 5,000 + 5,000 at batch 100) and 224-px features, restricted to the main "
            "configuration (Slice+BatchNorm, the stronger backbone, 48 bits) without labels: "
            "its hash labels, its network and the unsupervised baselines on the same features "
            "and on pixels (about 2 h 15 min on two cores, one sitting; STH, whose 48 linear SVMs "
            "take 20 s each on 50,000 feature vectors and 137 s each on 50,000 pixel vectors, "
            "fits its graph and SVMs on 10,000 of the images, its class's default). Table II's "
            "classifiers, the with-labels network and the held-out references are each "
            "another 1.5-3 h network at this scale and stay at the quick profile's; the "
            "other 39 configuration x backbone x code-length networks would take days",
    ),
)


SCALE_RUNS += (
    ScaleRun(
        notebook="04_ddh", run="finetune-top", profile="quick",
        params={"finetune": "top", "bits": [16, 32, 64]},
        closer_than_report=True,
        # the claims on the retrieval codes of the reported DDH, the model the run fine-tunes;
        # the pair labels (built on the frozen features) and the classification experiment
        # (frozen, as in the quick report) are the same in both, and the quick report has
        # them over three seeds
        claims=("ddh-table2-map", "ddh-table4-map", "ddh-beats-shallow", "ddh-pr-dominates",
                "ddh-training-adds-random-start", "ddh-random-start-keeps-up"),
        why="the quick profile's split and epochs with DDH training Lite0's top block stage "
            "(stage 6 and the head convolution) together with its hash layer, on cached stage-4 "
            "maps, by the DDH loss alone: the CPU's version of the paper's end-to-end training, "
            "at Table 2's code lengths (16, 32, 64 bits). An epoch of the top stage takes about "
            "2 min on one thread (49,000 images and the held-out scoring) and early stopping "
            "keeps a training between 8 and 20 epochs, so Table 4's 12, 24 and 48 bits stay at "
            "the frozen quick report, which runs in minutes. Torch stays on one thread: in this "
            "process a higher torch_threads does not hold, because numba's OpenMP pool, started "
            "by the first parallel numba kernel (the metrics), sets the OpenMP threads it shares "
            "with torch to the notebook's share (one of two cores)",
    ),
)


def runs_for(notebook: str, profile: str) -> list[ScaleRun]:
    """The scale runs of ``notebook`` at ``profile`` (in :data:`SCALE_RUNS` order)."""
    return [r for r in SCALE_RUNS if r.notebook == notebook and r.profile == profile]


def report_folder(run: ScaleRun, root=None) -> Path:
    """``<reports>/<notebook>/runs/<run>/<profile>/``."""
    base = Path(root) if root is not None else config.reports_dir()
    return base / run.notebook / "runs" / run.run / run.profile


def command(run: ScaleRun) -> list[str]:
    """The :mod:`hashstudy.regenerate` arguments of ``run``."""
    import json

    args = ["--profile", run.profile, "--only", run.notebook, "--run", run.run,
            "--jobs", str(run.jobs)]
    for name, value in run.params.items():  # text as it is (regenerate reads it so), else JSON
        args += ["-p", name, value if isinstance(value, str) else json.dumps(value)]
    return args


def progress_text(rows=None) -> str:
    """The trainings checkpointed in the cache and not finished
    (:func:`hashstudy.training.in_progress`), a line each: where each stands and, at the
    pace of its latest epochs, how long its current fit needs. The command that started a
    training resumes it."""
    import time

    if rows is None:
        from . import training

        rows = training.in_progress()
    if not rows:
        return "trainings in progress: none (no checkpoint in the cache)"
    lines = ["trainings in progress (checkpoints in the cache; the command that started each "
             "resumes it):"]
    for r in rows:
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["saved"]))
        if r["epoch"] is None:
            lines.append(f"  {r['model']}  fit {r['fit']}: checkpoint unreadable (saved {saved})")
            continue
        left = (r["epochs"] - r["epoch"]) * (r["seconds_per_epoch"] or 0)
        lines.append(f"  {r['model']}  fit {r['fit']}: epoch {r['epoch']}/{r['epochs']}, "
                     f"{r['seconds'] / 60:.0f} min trained, {r['seconds_per_epoch']:.0f} s per "
                     f"epoch, about {left / 60:.0f} min left in this fit (saved {saved})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hashstudy.scale",
                                     description="Paper-scale runs that fit this machine.")
    parser.add_argument("notebooks", nargs="*", help="run these notebooks' scale runs; "
                        "none: list every scale run")
    args = parser.parse_args(argv)
    known = sorted({r.notebook for r in SCALE_RUNS})
    if not args.notebooks:
        for r in SCALE_RUNS:
            there = (report_folder(r) / "metrics.json").exists()
            print(f"{r.notebook}  {r.label}  report {'present' if there else 'missing'}\n"
                  f"    python -m hashstudy.regenerate {shlex.join(command(r))}\n    {r.why}")
        print(progress_text())
        return 0
    unknown = [nb for nb in args.notebooks if nb not in known]
    if unknown:
        print(f"error: no scale run for {', '.join(unknown)}; notebooks with one: "
              f"{', '.join(known)}", file=sys.stderr)
        return 2
    import signal
    import subprocess

    status = 0
    for nb in args.notebooks:
        for r in SCALE_RUNS:
            if r.notebook != nb:
                continue
            # its own process: regenerate reads the ledger, which reads us
            proc = subprocess.Popen([sys.executable, "-m", "hashstudy.regenerate", *command(r)])
            # SIGTERM (kill, a scheduler, a shutdown) goes on to regenerate, which
            # interrupts its notebook and removes the unfinished files; Ctrl-C reaches it from
            # the terminal by itself
            previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
            try:
                code = proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached regenerate too: wait for its clean-up
                while True:
                    try:
                        code = proc.wait()
                        break
                    except KeyboardInterrupt:  # pressed again: the clean-up still runs
                        continue
            finally:
                signal.signal(signal.SIGTERM, previous)
            if code == 130:
                print("interrupted: the cache keeps every finished epoch; the same command "
                      "resumes", file=sys.stderr)
                return 130
            status = max(status, code)
    return status


if __name__ == "__main__":
    sys.exit(main())
