"""A small, shared training loop for the study's networks, and a cache of trained weights.

Every deep method of the study trains through :func:`fit`: mini-batches drawn
with a seeded generator, a choice of optimiser and learning-rate schedule, a
progress bar, and a per-epoch history. :func:`cached_model` stores the trained
weights under ``<cache>/models`` keyed by everything the training depends on,
so a notebook re-run with the same parameters loads them instead of training.

Threads: :func:`set_threads` applies ``HASHSTUDY_THREADS`` (set by the report
command when notebooks run in parallel) or the number of cores.
"""
from __future__ import annotations

import io
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import cache, config, timing

__all__ = ["set_threads", "seed_everything", "fit", "History", "predict", "cached_model",
           "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "linear", "cosine", "step")


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
        desc: str = "training", on_epoch_end: Optional[Callable] = None) -> History:
    """Train ``model`` by mini-batch gradient descent.

    Parameters
    ----------
    inputs : tensor or sequence of tensors, all with the same first dimension
        The training arrays (e.g. ``(images, targets)``); each batch passes
        ``model`` and the batch's tensors to ``loss_fn``.
    loss_fn : callable ``(model, *batch) -> loss`` or ``-> (loss, {name: value})``
        The objective for one mini-batch (scalar tensor).
    epochs, batch_size, lr, optimizer, momentum, weight_decay
        ``optimizer`` is ``"sgd"`` (with momentum) or ``"adam"``.
    schedule : {"constant", "linear", "cosine", "step"}
        Learning rate per step: constant; linear decay to ``lr * final_lr_ratio``;
        cosine to the same floor; or x0.1 every ``step_every`` steps.
    seed : int
        Seeds the batch order (and torch's global generator).
    params : iterable of parameters, optional
        What to optimise (default: every parameter with ``requires_grad``).
    transform : callable, optional
        Applied to the first tensor of each batch in training (augmentation).
    on_epoch_end : callable ``(epoch, model) -> dict or None``, optional
        Extra values to log each epoch (e.g. how binary the codes are).
    """
    config.check_choice("optimizer", optimizer, OPTIMIZERS)
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"all training tensors need the same length; got {[t.shape[0] for t in tensors]}")
    gen = seed_everything(seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (n + batch_size - 1) // batch_size)
    sched = _schedule(opt, schedule, epochs * steps_per_epoch, final_lr_ratio,
                      step_every or steps_per_epoch * max(1, epochs // 3))
    history = History()
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="batch", leave=False)
    model.train()
    try:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                batch = [t[idx] for t in tensors]
                if transform is not None:
                    batch[0] = transform(batch[0])
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
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    history.seconds = time.time() - t0
    return history


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 512,
            fn: Optional[Callable] = None) -> np.ndarray:
    """Apply ``model`` (or ``fn(model, batch)``) to ``x`` in batches, in eval mode."""
    model.eval()
    x = torch.as_tensor(x)
    outs = []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start:start + batch_size]
        outs.append((fn(model, batch) if fn else model(batch)).detach().cpu().numpy())
    return np.concatenate(outs) if outs else np.empty((0,))


def cached_model(name: str, key_parts: dict, build: Callable[[], nn.Module],
                 train: Callable[[nn.Module], Optional[dict]]):
    """Build a model and load its trained weights from the cache, or train and save them.

    Parameters
    ----------
    name : str
        Readable prefix of the cache file (e.g. ``"dsth-mnist-cnn"``).
    key_parts : dict
        Everything the trained weights depend on (data identity, split,
        architecture, hyper-parameters, seed); hashed into the file name
        together with torch's thread count, on which CPU training's floating-
        point sums (and so the weights) depend.
    build : callable returning a fresh ``nn.Module``
    train : callable ``(model) -> info dict or None``
        Trains the model in place; the returned dict (e.g. the loss history)
        is saved beside the weights and returned on later loads.

    Returns
    -------
    model, info, loaded : nn.Module in eval mode, dict, bool (True if from cache)
        ``info["train_seconds"]`` is the wall time ``train`` took when the
        weights were trained (unless ``train`` returned that key itself; a
        returned :class:`History` is saved as its dict), so a
        load from the cache still reports how long training took; files
        written before this key existed lack it.
    """
    import json

    # the thread count is part of the key: on a CPU, the same seed gives different weights
    # with a different number of threads (float sums are split differently)
    threads = torch.get_num_threads()
    path = config.cache_dir("models") / f"{name}-{cache.key({**key_parts, '_threads': threads})}.pt"
    model = build()
    with cache.locked(path):
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=False)
                model.load_state_dict(blob["state_dict"])
                model.eval()
                timing.count("cache_hits")
                return model, json.loads(blob["info"]), True
            except Exception as exc:  # damaged or incompatible file: retrain
                print(f"cached weights {path.name} unusable ({exc}); retraining")
                path.unlink(missing_ok=True)
                model = build()
        timing.count("cache_misses")
        t0 = time.perf_counter()
        info = train(model) or {}
        if isinstance(info, History):
            info = _plain(info)
        if isinstance(info, dict) and "train_seconds" not in info:
            info = {**info, "train_seconds": time.perf_counter() - t0}
        info = json.loads(json.dumps(info, default=_plain))
        model.eval()
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "info": json.dumps(info)}, buf)
        with cache.atomic_path(path) as tmp:
            Path(tmp).write_bytes(buf.getvalue())
    return model, info, False


def _plain(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, History):
        return {"loss": x.loss, "logs": x.logs, "seconds": x.seconds}
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
