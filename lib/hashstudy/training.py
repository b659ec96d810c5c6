"""A small, shared training loop for the study's networks, and a cache of trained weights.

Every deep method of the study trains through :func:`fit`: mini-batches drawn
with a seeded generator, a choice of optimiser and learning-rate schedule, a
progress bar, and a per-epoch history. :func:`cached_model` stores the trained
weights under ``<cache>/models`` keyed by everything the training depends on,
so a notebook re-run with the same parameters loads them instead of training.

Devices: :func:`default_device` picks where training runs (an explicit argument,
else ``HASHSTUDY_DEVICE``, else CUDA when available, else the CPU). :func:`fit`
and :func:`predict` move the model there and each mini-batch as it is drawn (the
data stay in CPU memory); :func:`cached_model` keys weights trained on a GPU by
the device type (CPU keys are as they always were) and loads weights onto the
device.

Resumable training: while :func:`cached_model` trains, the i-th :func:`fit`
call of that training writes a checkpoint ``<weights file stem>.fit<i>.ckpt``
beside the weights at the end of every epoch (atomically): model, optimiser and
schedule states, the history so far, the epoch, and the random states (python,
numpy, torch and the batch order). If the training is interrupted, running it
again resumes every ``fit`` from its checkpoint: a finished one restores its
final state and history without training, an unfinished one continues with the
next epoch, so the result is bit-identical to an uninterrupted run. The
checkpoints are deleted once the weights are saved; a damaged or incompatible
one is reported in one line and ignored. A ``fit`` outside :func:`cached_model`
checkpoints only to an explicit ``checkpoint=`` path. State kept outside the
model, the optimiser and the random generators (e.g. in a loss's closure or an
``on_epoch_end`` hook) is not saved: such trainings pass ``checkpoint=False``.

Threads: :func:`set_threads` applies ``HASHSTUDY_THREADS`` (set by the report
command when notebooks run in parallel) or the number of cores.
"""
from __future__ import annotations

import contextvars
import copy
import glob
import io
import os
import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import cache, config, timing

__all__ = ["set_threads", "seed_everything", "default_device", "fit", "History", "predict",
           "cached_model", "in_progress", "OPTIMIZERS", "SCHEDULES", "DEVICES"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "linear", "cosine", "step")
DEVICES = ("cpu", "cuda", "cuda:N", "mps")

DeviceLike = Union[str, torch.device, None]

_CHECKPOINT_FORMAT = 1


def default_device(device: DeviceLike = None) -> torch.device:
    """The device to train on: ``device`` if given, else ``HASHSTUDY_DEVICE`` if set,
    else CUDA when available, else the CPU.

    Parameters
    ----------
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (case-insensitive).

    Raises
    ------
    ValueError
        For any other string (or value of ``HASHSTUDY_DEVICE``). Whether the
        device is present is not checked here (torch reports it on first use).
    """
    source = "device"
    if device is None:
        env = os.environ.get("HASHSTUDY_DEVICE", "").strip()
        if env:
            device, source = env, "HASHSTUDY_DEVICE"
        else:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        text = str(device)
    elif isinstance(device, str):
        text = device.strip().lower()
    else:
        text = None
    if text is None or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        allowed = ", ".join(f"{d!r}" for d in DEVICES)
        raise ValueError(f"unknown {source} {device!r}; allowed values: {allowed} "
                         f"(N a GPU index)")
    return torch.device(text)


@dataclass
class _Run:
    """What :func:`cached_model` tells the :func:`fit` calls of one training."""

    stem: Path
    device: torch.device
    fits: int = 0

    def next_checkpoint(self) -> Path:
        self.fits += 1
        return self.stem.with_name(f"{self.stem.name}.fit{self.fits}.ckpt")

    def checkpoints(self) -> list:
        return sorted(Path(p) for p in glob.glob(f"{glob.escape(str(self.stem))}.fit*.ckpt"))


_RUN: contextvars.ContextVar[Optional[_Run]] = contextvars.ContextVar("hashstudy_training_run",
                                                                     default=None)


def _resolve_device(device: DeviceLike) -> torch.device:
    if device is None:
        run = _RUN.get()
        if run is not None:
            return run.device
    return default_device(device)


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads (``HASHSTUDY_THREADS`` or all cores); returns the number."""
    if n is None:
        n = int(os.environ.get("HASHSTUDY_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class History:
    """Per-epoch mean loss (and any extra logged values), plus wall time."""

    loss: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    seconds: float = 0.0


def _schedule(optimizer, name: str, total_steps: int, final_lr_ratio: float, step_every: int):
    config.check_choice("schedule", name, SCHEDULES)
    if name == "constant":
        return None
    if name == "linear":  # linearly from lr to lr * final_lr_ratio
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 1 - (1 - final_lr_ratio) * min(s, total_steps) / max(1, total_steps))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps), eta_min=optimizer.defaults["lr"] * final_lr_ratio)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, step_every), gamma=0.1)


@timing.timed("training")
def fit(model: nn.Module, inputs: Sequence[torch.Tensor] | torch.Tensor, loss_fn: Callable, *,
        epochs: int, batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam",
        momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant",
        final_lr_ratio: float = 0.01, step_every: Optional[int] = None, seed: int = 0,
        params=None, transform: Optional[Callable] = None, progress: bool = True,
        desc: str = "training", on_epoch_end: Optional[Callable] = None,
        device: DeviceLike = None,
        checkpoint: Union[str, os.PathLike, None, bool] = None) -> History:
    """Train ``model`` by mini-batch gradient descent.

    Parameters
    ----------
    inputs : tensor or sequence of tensors, all with the same first dimension
        The training arrays (e.g. ``(images, targets)``); each batch passes
        ``model`` and the batch's tensors to ``loss_fn``. They stay where they
        are (normally CPU memory); each mini-batch is moved to ``device``.
    loss_fn : callable ``(model, *batch) -> loss`` or ``-> (loss, {name: value})``
        The objective for one mini-batch (scalar tensor).
    epochs, batch_size, lr, optimizer, momentum, weight_decay
        ``optimizer`` is ``"sgd"`` (with momentum) or ``"adam"``.
    schedule : {"constant", "linear", "cosine", "step"}
        Learning rate per step: constant; linear decay to ``lr * final_lr_ratio``;
        cosine to the same floor; or x0.1 every ``step_every`` steps.
    seed : int
        Seeds the batch order (and python's, numpy's and torch's global generators).
    params : iterable of parameters, optional
        What to optimise (default: every parameter with ``requires_grad``).
    transform : callable, optional
        Applied to the first tensor of each batch in training (augmentation),
        before the batch is moved to ``device``.
    on_epoch_end : callable ``(epoch, model) -> dict or None``, optional
        Extra values to log each epoch (e.g. how binary the codes are).
    device : str or torch.device, optional
        Where to train (see :func:`default_device`); the model is moved there.
        Default: the device of the enclosing :func:`cached_model`, else
        :func:`default_device`.
    checkpoint : path, None or False
        Where to write a checkpoint at the end of every epoch and to resume
        from. ``None`` (default): inside :func:`cached_model`, the file it
        assigns to this call (``<weights stem>.fit<i>.ckpt``); outside it, no
        checkpoint. ``False``: never (for trainings with state outside the
        model, optimiser and random generators, which a checkpoint would miss).

    Notes
    -----
    A checkpoint holds the model, optimiser and schedule states, the history,
    the number of epochs done and the random states (python ``random``, numpy's
    and torch's global generators, and the batch-order generator). If one
    exists and was written by the same training (same epochs, data length,
    batch size, optimiser, schedule, learning rate and seed), ``fit`` restores
    it and continues with the next epoch, so an interrupted and resumed
    training ends bit-identical to an uninterrupted one; if it says all epochs
    are done, ``fit`` returns its history without training (``on_epoch_end`` is
    not called for restored epochs; their logged values are in the history).
    A damaged or incompatible checkpoint is reported in one line and ignored.
    The progress bar of a resumed training starts at the resumed position.
    """
    config.check_choice("optimizer", optimizer, OPTIMIZERS)
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"all training tensors need the same length; got {[t.shape[0] for t in tensors]}")
    dev = _resolve_device(device)
    run = _RUN.get()
    assigned = run.next_checkpoint() if run is not None else None  # every fit call counts
    if checkpoint is None:
        checkpoint = assigned
    ckpt = Path(checkpoint) if checkpoint not in (None, False, True) else None
    if checkpoint is True:
        raise ValueError("checkpoint must be a path, None or False")
    model.to(dev)
    steps_per_epoch = max(1, (n + batch_size - 1) // batch_size)
    chosen = list(params) if params is not None else None

    def start():
        gen = seed_everything(seed)
        ps = [p for p in (chosen if chosen is not None else model.parameters()) if p.requires_grad]
        if optimizer == "sgd":
            opt = torch.optim.SGD(ps, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            opt = torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay)
        sched = _schedule(opt, schedule, epochs * steps_per_epoch, final_lr_ratio,
                          step_every or steps_per_epoch * max(1, epochs // 3))
        return gen, opt, sched

    gen, opt, sched = start()
    history = History()
    meta = {"epochs": int(epochs), "n": int(n), "batch_size": int(batch_size),
            "optimizer": optimizer, "schedule": schedule, "lr": float(lr), "seed": int(seed),
            "momentum": float(momentum), "weight_decay": float(weight_decay),
            "final_lr_ratio": float(final_lr_ratio), "step_every": step_every}
    first_epoch, seconds_before = 0, 0.0
    if ckpt is not None and ckpt.exists():
        before = copy.deepcopy(model.state_dict())
        try:
            first_epoch, seconds_before = _restore(ckpt, meta, model, opt, sched, gen, history, dev)
        except Exception as exc:  # damaged or from another training: start afresh
            print(f"checkpoint {ckpt.name} unusable ({exc}); training from scratch")
            model.load_state_dict(before)
            gen, opt, sched = start()
            history = History()
            first_epoch, seconds_before = 0, 0.0
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
                   desc=desc, unit="batch", leave=False)
    model.train()
    try:
        for epoch in range(first_epoch, epochs):
            order = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for begin in range(0, n, batch_size):
                idx = order[begin:begin + batch_size]
                batch = [t[idx] for t in tensors]
                if transform is not None:
                    batch[0] = transform(batch[0])
                batch = [b.to(dev) for b in batch]
                out = loss_fn(model, *batch)
                loss, extra = (out if isinstance(out, tuple) else (out, {}))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach()) * idx.numel()
                seen += idx.numel()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.4f}")
            history.loss.append(total / max(1, seen))
            if on_epoch_end is not None:
                model.eval()
                logged = on_epoch_end(epoch, model) or {}
                model.train()
                history.logs.append(dict(logged))
            if ckpt is not None:
                _save_checkpoint(ckpt, meta, epoch + 1, model, opt, sched, gen, history,
                                 seconds_before + time.time() - t0, dev)
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    history.seconds = seconds_before + time.time() - t0
    return history


def _rng_states(gen: torch.Generator, dev: torch.device) -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state(), "batches": gen.get_state()}
    if dev.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(dev)
    return states


def _save_checkpoint(path: Path, meta: dict, epoch: int, model: nn.Module, opt, sched,
                     gen: torch.Generator, history: History, seconds: float,
                     dev: torch.device) -> None:
    blob = {"format": _CHECKPOINT_FORMAT, "meta": meta, "epoch": int(epoch),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "history": {"loss": list(history.loss), "logs": list(history.logs),
                        "seconds": float(seconds)},
            "rng": _rng_states(gen, dev)}
    with cache.atomic_path(path) as tmp:
        torch.save(blob, tmp)


_CKPT_NAME = re.compile(r"^(?P<model>.+)\.fit(?P<fit>[0-9]+)\.ckpt$")


def in_progress(folder: Optional[Path] = None) -> list[dict]:
    """The trainings that :func:`cached_model` has checkpointed but not finished.

    One dict per model file, from the checkpoints in ``folder`` (default: the cache's
    ``models/``): ``model`` (the weights' file name, without ``.pt``), ``fit`` (how many
    ``fit`` calls of its training have started; a training may run several, e.g. one per
    learning rate), ``epoch`` and ``epochs`` of its latest one, ``seconds`` (trained so far,
    over all its fits and all the runs it was resumed in), ``seconds_per_epoch`` (of the
    latest fit) and ``saved`` (when its latest checkpoint was written, a UNIX time). A
    damaged checkpoint is listed with ``epoch`` None. Sorted by ``saved``, latest first.
    """
    folder = Path(folder) if folder is not None else config.cache_dir("models")
    groups: dict = {}
    for path in folder.glob("*.fit*.ckpt"):
        m = _CKPT_NAME.match(path.name)
        if m:
            groups.setdefault(m["model"], []).append((int(m["fit"]), path))
    rows = []
    for model, fits in groups.items():
        fits.sort()
        seconds, last = 0.0, None
        for n, path in fits:
            try:
                blob = torch.load(path, map_location="cpu", weights_only=False)
                seconds += float(blob["history"]["seconds"])
                last = (n, path, int(blob["epoch"]), int(blob["meta"]["epochs"]),
                        float(blob["history"]["seconds"]))
            except Exception:  # damaged, or written by another version: say so, go on
                last = (n, path, None, None, None)
        n, path, epoch, epochs, phase_seconds = last
        rows.append({"model": model, "fit": n, "epoch": epoch, "epochs": epochs,
                     "seconds": seconds,
                     "seconds_per_epoch": phase_seconds / epoch if epoch else None,
                     "saved": path.stat().st_mtime})
    return sorted(rows, key=lambda r: -r["saved"])


def _restore(path: Path, meta: dict, model: nn.Module, opt, sched, gen: torch.Generator,
             history: History, dev: torch.device) -> tuple[int, float]:
    """Load the checkpoint at ``path`` into the training's objects; returns (epochs done,
    seconds trained). Raises if it is damaged or was written by another training."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError("not a training checkpoint of this version")
    if blob["meta"] != meta:
        diff = sorted(k for k in set(meta) | set(blob["meta"])
                      if meta.get(k) != blob["meta"].get(k))
        raise ValueError(f"written by another training (differs in {', '.join(diff)})")
    epoch = int(blob["epoch"])
    if not 0 < epoch <= meta["epochs"]:
        raise ValueError(f"epoch {epoch} outside 1..{meta['epochs']}")
    if (sched is None) != (blob["scheduler"] is None):
        raise ValueError("scheduler mismatch")
    rng = blob["rng"]
    if dev.type == "cuda" and "cuda" not in rng:
        raise ValueError("written by a training on another device")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    if sched is not None:
        sched.load_state_dict(blob["scheduler"])
    history.loss[:] = [float(v) for v in blob["history"]["loss"]]
    history.logs[:] = list(blob["history"]["logs"])
    if len(history.loss) != epoch:
        raise ValueError(f"history of {len(history.loss)} epochs for epoch {epoch}")
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    gen.set_state(rng["batches"])
    if dev.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], dev)
    return epoch, float(blob["history"]["seconds"])


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 512,
            fn: Optional[Callable] = None, device: DeviceLike = None) -> np.ndarray:
    """Apply ``model`` (or ``fn(model, batch)``) to ``x`` in batches, in eval mode.

    The model is moved to ``device`` (default as in :func:`fit`) and each batch
    of ``x`` with it; the result is a NumPy array (in CPU memory).
    """
    dev = _resolve_device(device)
    model.to(dev)
    model.eval()
    x = torch.as_tensor(x)
    outs = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size].to(dev)
        outs.append((fn(model, batch) if fn else model(batch)).detach().cpu().numpy())
    return np.concatenate(outs) if outs else np.empty((0,))


def cached_model(name: str, key_parts: dict, build: Callable[[], nn.Module],
                 train: Callable[[nn.Module], Optional[dict]], device: DeviceLike = None):
    """Build a model and load its trained weights from the cache, or train and save them.

    Parameters
    ----------
    name : str
        Readable prefix of the cache file (e.g. ``"dsth-mnist-cnn"``).
    key_parts : dict
        Everything the trained weights depend on (data identity, split,
        architecture, hyper-parameters, seed); hashed into the file name
        together with torch's thread count, on which CPU training's floating-
        point sums (and so the weights) depend, and, for a device other than
        the CPU, the device type (a GPU's weights differ from the CPU's).
    build : callable returning a fresh ``nn.Module``
    train : callable ``(model) -> info dict or None``
        Trains the model in place; the returned dict (e.g. the loss history)
        is saved beside the weights and returned on later loads. Its
        :func:`fit` calls train on ``device`` and checkpoint every epoch (see
        :func:`fit`), so an interrupted training resumes where it stopped when
        ``cached_model`` is called again; the checkpoints are deleted once the
        weights are saved.
    device : str or torch.device, optional
        Where to train and put the loaded weights (see :func:`default_device`).
        Default: the device ``build`` puts the model on (the CPU unless it
        moves it), so callers that do not choose a device keep their keys.

    Returns
    -------
    model, info, loaded : nn.Module in eval mode on ``device``, dict, bool (True if from cache)
        ``info["train_seconds"]`` is the wall time ``train`` took when the
        weights were trained (unless ``train`` returned that key itself; a
        returned :class:`History` is saved as its dict), over every run of a
        training resumed from its checkpoints (the history's ``seconds``, when
        ``train`` returns one, counts them all), so a load from the cache still
        reports how long training took (and :func:`hashstudy.timing.loaded_training`
        records it for the report); files written before this key existed lack it.
    """
    import json

    model = build()
    dev = default_device(device) if device is not None else _model_device(model)
    # the thread count is part of the key: on a CPU, the same seed gives different weights
    # with a different number of threads (float sums are split differently)
    threads = torch.get_num_threads()
    parts = {**key_parts, "_threads": threads}
    if dev.type != "cpu":  # CPU keys stay as they were before devices existed
        parts["_device"] = dev.type
    path = config.cache_dir("models") / f"{name}-{cache.key(parts)}.pt"
    run = _Run(path.with_suffix(""), dev)
    with cache.locked(path):
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=False)
                model.load_state_dict(blob["state_dict"])
                model.to(dev)
                model.eval()
                timing.count("cache_hits")
                info = json.loads(blob["info"])
                timing.loaded_training(path.stem, info.get("train_seconds")
                                       if isinstance(info, dict) else None)
                return model, info, True
            except Exception as exc:  # damaged or incompatible file: retrain
                print(f"cached weights {path.name} unusable ({exc}); retraining")
                path.unlink(missing_ok=True)
                model = build()
        timing.count("cache_misses")
        t0 = time.perf_counter()
        token = _RUN.set(run)
        try:
            info = train(model) or {}
        finally:
            _RUN.reset(token)
        if isinstance(info, History):
            info = _plain(info)
        if isinstance(info, dict) and "train_seconds" not in info:
            seconds = time.perf_counter() - t0
            # a training resumed from its checkpoints ran over several processes: the epoch
            # loop's own "seconds" (History, summed over every run it was resumed in) is then
            # the longer and the true figure
            earlier = info.get("seconds")
            if isinstance(earlier, (int, float)) and not isinstance(earlier, bool):
                seconds = max(seconds, float(earlier))
            info = {**info, "train_seconds": seconds}
        info = json.loads(json.dumps(info, default=_plain))
        model.to(dev)
        model.eval()
        state = model.state_dict()
        if dev.type != "cpu":
            state = OrderedDict((k, v.cpu()) for k, v in state.items())
        buf = io.BytesIO()
        torch.save({"state_dict": state, "info": json.dumps(info)}, buf)
        with cache.atomic_path(path) as tmp:
            Path(tmp).write_bytes(buf.getvalue())
        for ckpt in run.checkpoints():  # the weights are safe: the checkpoints are spent
            ckpt.unlink(missing_ok=True)
    return model, info, False


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU if it has none."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _plain(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, History):
        return {"loss": x.loss, "logs": x.logs, "seconds": x.seconds}
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
