"""Benchmark: one SGD step of the journal DSTH's hash network, per thread count.

Notebook 05's `paper` profile trains SimpleNet + Slice + BatchNorm for 70,000
steps of 100 images, so this step's time sets the cost of its paper-scale run
(``python -m hashstudy.scale 05_dsth_tcyb2018``) and tells whether one
notebook on all cores beats one notebook per core. Random 32-px images and
48-bit targets; the first ``--warmup`` steps are not timed.

Usage::

    python benchmarks/simplenet_step.py                  # 1 thread, then all cores
    python benchmarks/simplenet_step.py --threads 1 2 4 --steps 50
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from hashstudy import dsth_journal as dj


def step_seconds(threads: int, steps: int = 50, warmup: int = 10, batch: int = 100,
                 bits: int = 48) -> float:
    """Mean seconds of one forward, eq. 18 loss, backward and SGD update on ``threads``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = dj.HashNet(input_size=32, n_bits=bits, encoder="slice", head="batchnorm")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.004)
    x = torch.randn(batch, 3, 32, 32)
    y = (torch.rand(batch, bits) > 0.5).float()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        opt.zero_grad()
        dj.eq18_loss(net(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)
    if min(args.threads) < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--threads and --steps must be at least 1, --warmup at least 0")
    print("threads  s/step  70,000 steps")
    for n in args.threads:
        s = step_seconds(n, args.steps, args.warmup)
        print(f"{n:7d}  {s:6.3f}  {70000 * s / 3600:5.1f} h")


if __name__ == "__main__":
    main()
