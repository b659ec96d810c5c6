"""Benchmark: how fast a new image is encoded, SimpleNet against the label-stage backbone.

The DSTH journal paper (IEEE T-Cyb 2018) trains a simple network (SimpleNet,
Table I) in its hash-function stage so that new images are encoded faster than
the deep network of its label stage would encode them. This script measures,
on the machine it runs on, milliseconds per CIFAR-10 test image (decoded
uint8 32x32 images in memory; preprocessing included; batches of
``--batch`` images; the median of ``--repeats`` passes over ``--images``
images):

``simplenet``            the hash function of notebook 05: SimpleNet (32x32
                         column of Table I) + Slice encoder + BatchNorm head,
                         48 bits, in eval mode (the weights do not change the
                         time, so they are the seeded initial ones);
``efficientnet_lite0``   the label stage's backbone at the study's 128 px
                         through ``features.extract``, under each runtime
                         (``.../torch/...``, ``.../onnxruntime/...``); the
                         headline key takes the faster one.

Outputs: keys ``cifar10/encode/<net>[/<runtime>]/ms_per_image`` merged into
``reports/benchmarks/<profile>/metrics.json`` (profile ``quick``, or ``smoke``
with ``--smoke``), and ``encoding.csv``, ``encoding.txt``,
``encoding_meta.json`` beside it. Run ``python benchmarks/encoding.py`` or
``make benchmark-encoding``; timings mean something only on an idle machine
(the load average before and after is recorded).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hashstudy import cache, config, data, features
from machine import describe, load_average  # benchmarks/machine.py
from hashstudy import dsth_journal as dj

OWNED_PREFIXES = ("cifar10/encode/",)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="test images per pass (default 1000)")
    p.add_argument("--batch", type=int, default=100, help="images per forward pass (default 100)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the median counts")
    p.add_argument("--bits", type=int, default=48)
    p.add_argument("--input-size", type=int, default=128, help="backbone input side (px)")
    p.add_argument("--smoke", action="store_true", help="a tiny run on random images")
    p.add_argument("--out", help="output folder (default reports/benchmarks/<profile>/)")
    args = p.parse_args(argv)
    for name in ("images", "batch", "repeats", "bits", "input_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.smoke:
        args.images, args.repeats, args.input_size = 40, 1, 64
    return args


def _images(args) -> np.ndarray:
    if args.smoke or not data.available("cifar10", "test"):
        if not args.smoke:
            raise SystemExit("CIFAR-10 test images not found under HASHSTUDY_DATA "
                             f"({config.data_root()}); see data/README.md, or use --smoke")
        return np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    return data.load("cifar10", "test").images[:args.images]


def _median_ms_per_image(run, n_images: int, repeats: int) -> float:
    run()  # warm-up: first-call allocations, ONNX session, numba/torch lazy init
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / n_images


def measure(args) -> list[dict]:
    images = _images(args)
    torch.manual_seed(0)
    net = dj.HashNet(32, args.bits, encoder="slice", head="batchnorm").eval()
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def simplenet():
        with torch.inference_mode():
            for s in range(0, len(x_all), args.batch):
                net(x_all[s:s + args.batch])

    rows = [{"net": "simplenet", "runtime": "torch", "input_px": 32,
             "ms_per_image": _median_ms_per_image(simplenet, len(images), args.repeats)}]
    bb = features.load_backbone("efficientnet_lite0")
    runtimes = ["torch"] + (["onnxruntime"] if features._onnx_available() else [])
    for runtime in runtimes:
        def lite0(runtime=runtime):
            features.extract(images, bb, args.input_size, batch_size=args.batch,
                             progress=False, runtime=runtime)
        rows.append({"net": "efficientnet_lite0", "runtime": runtime, "input_px": args.input_size,
                     "ms_per_image": _median_ms_per_image(lite0, len(images), args.repeats)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    profile = "smoke" if args.smoke else "quick"
    out = config.reports_dir("benchmarks", profile) if not args.out else \
        __import__("pathlib").Path(args.out)
    load_before = load_average()
    t0 = time.time()
    rows = measure(args)
    metrics = {}
    for r in rows:
        metrics[f"cifar10/encode/{r['net']}/{r['runtime']}/ms_per_image"] = r["ms_per_image"]
    # the label stage's network as fast as this machine runs it: the faster runtime
    used = min((r for r in rows if r["net"] == "efficientnet_lite0"),
               key=lambda r: r["ms_per_image"])["runtime"]
    metrics["cifar10/encode/simplenet/ms_per_image"] = \
        metrics["cifar10/encode/simplenet/torch/ms_per_image"]
    metrics["cifar10/encode/efficientnet_lite0/ms_per_image"] = \
        metrics[f"cifar10/encode/efficientnet_lite0/{used}/ms_per_image"]
    ratio = metrics["cifar10/encode/efficientnet_lite0/ms_per_image"] / \
        metrics["cifar10/encode/simplenet/ms_per_image"]
    metrics["cifar10/encode/lite0_over_simplenet"] = ratio
    lines = [f"Encoding speed: {args.images} CIFAR-10 test images, batches of {args.batch}, "
             f"{torch.get_num_threads()} thread(s), median of {args.repeats} passes", "",
             f"{'network':<22}{'runtime':<14}{'input':>7}{'ms/image':>11}"]
    for r in rows:
        lines.append(f"{r['net']:<22}{r['runtime']:<14}{r['input_px']:>5}px{r['ms_per_image']:>11.3f}")
    lines += ["", "Claim (DSTH journal): the hash-function stage's simple network encodes new "
                  "images faster than the label stage's deep network.",
              f"Measured: SimpleNet {metrics['cifar10/encode/simplenet/ms_per_image']:.3f} ms per "
              f"image against {metrics['cifar10/encode/efficientnet_lite0/ms_per_image']:.3f} ms "
              f"for EfficientNet-Lite0 ({used}), {ratio:.1f} times faster."]
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    cache.merge_json(out / "metrics.json", metrics, OWNED_PREFIXES)
    cache.write_text(out / "encoding.txt", text + "\n")
    header = "net,runtime,input_px,ms_per_image\n"
    cache.write_text(out / "encoding.csv", header + "".join(
        f"{r['net']},{r['runtime']},{r['input_px']},{r['ms_per_image']:.6f}\n" for r in rows))
    cache.write_json(out / "encoding_meta.json", {
        "parameters": vars(args), "threads": torch.get_num_threads(),
        "machine": describe(load_before), "torch": torch.__version__,
        "wall_s": round(time.time() - t0, 1), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(f"\nwrote {out}/metrics.json (merged), encoding.csv, encoding.txt, encoding_meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
