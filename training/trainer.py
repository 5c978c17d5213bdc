"""Generic fit loop shared by every model: seeds, device, early stopping, progress bars, run outputs.

A run directory holds ``config.json``, ``history.json``, ``loss_curve.png``, ``checkpoint.pt`` (best
weights by validation loss), and whatever the task adds (``metrics.json``, evaluation plots).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.errors import ConfigError

if TYPE_CHECKING:
    from training.registry import TaskContext

LossFn = Callable[[nn.Module, Any], torch.Tensor]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) and prefer deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``/``cuda`` force one (``cuda`` fails if absent)."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but CUDA is not available")
    if preference not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {preference!r}; use auto, cpu or cuda")
    return torch.device(preference)


def limit_threads(n: int | None = None) -> int:
    """Cap torch's intra-op threads (``n``, else ``ECG_TORCH_THREADS``, default 1).

    On a shared, oversubscribed CPU one thread per process is several times faster than two (OpenMP
    threads spin-waiting for a core); raise it on a dedicated machine.
    """
    n = n or int(os.environ.get("ECG_TORCH_THREADS", "1"))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def new_run_dir(runs_dir: Path, model: str, tag: str = "") -> Path:
    """Create ``runs_dir/<model>/<UTC timestamp>[.n][-tag]`` and return it (``.n`` only when runs start in
    the same second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        name = stamp if n == 0 else f"{stamp}.{n}"
        path = Path(runs_dir) / model / (f"{name}-{tag}" if tag else name)
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory for {model} at {stamp}")


def start_run(ctx: TaskContext, model: str, tag: str = "", seed: int | None = None) -> Path:
    """The common start of a ``train`` command: cap threads, seed (when given), create the run directory
    (``ctx.run_dir`` or a new one) and write the run's ``config.json`` (with the command line)."""
    limit_threads()
    if seed is not None:
        seed_everything(seed)
    run_dir = ctx.run_dir or new_run_dir(ctx.runs_dir, model, tag)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {**ctx.config, "command": ctx.command})
    return run_dir


def latest_run_dir(runs_dir: Path, model: str, tag: str = "") -> Path:
    """Most recent run directory of ``model`` holding a checkpoint (in it or one level down), optionally with ``tag``."""
    root = Path(runs_dir) / model
    runs = sorted(
        p
        for p in root.glob("*")
        if ((p / "checkpoint.pt").is_file() or any(p.glob("*/checkpoint.pt")))
        and (not tag or p.name.endswith(f"-{tag}"))
    )
    if not runs:
        raise ConfigError(
            f"no trained run of {model!r} under {root}; run `python -m training train {model}` first"
        )
    return runs[-1]


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (numpy scalars/arrays converted)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o)}")

    path.write_text(json.dumps(obj, indent=2, default=default, allow_nan=False) + "\n")
    return path


@dataclass
class FitConfig:
    """Options of :func:`fit` (read from the model config's ``train`` section)."""

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 4
    min_delta: float = 1e-5
    max_minutes: float = 0.0  # 0 = no wall-clock budget
    grad_clip: float = 0.0
    lr_plateau_factor: float = 0.5  # ReduceLROnPlateau factor; 1 disables
    ema_decay: float = (
        0.0  # > 0: validate and checkpoint an exponential moving average of the weights
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    best_val_metric: float | None = (
        None  # with ``select_fn``: the validation metric that chose the checkpoint
    )
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    checkpoint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_loss(
    model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, device: torch.device
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            batch = to_device(batch, device)
            loss = loss_fn(model, batch)
            n = batch_size(batch)
            total += float(loss) * n
            count += n
    return total / max(count, 1)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor or a tuple/list/dict of tensors to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (tuple, list)):
        return batch_size(batch[0])
    if isinstance(batch, dict):
        return batch_size(next(iter(batch.values())))
    return 1


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    loss_fn: LossFn,
    cfg: FitConfig,
    run_dir: Path,
    device: torch.device | None = None,
    progress: bool = True,
    desc: str = "train",
    select_fn: Callable[[nn.Module], float] | None = None,
) -> FitResult:
    """Train ``model`` with Adam on ``loss_fn(model, batch)``, early stopping on validation loss.

    With ``select_fn`` (model -> a validation metric, higher is better, e.g. a validation AUROC), the
    checkpoint and early stopping follow that metric instead of the validation loss. With
    ``cfg.ema_decay > 0`` an exponential moving average of the weights is validated and checkpointed.
    Writes ``checkpoint.pt`` (best weights), ``history.json`` and ``loss_curve.png`` into ``run_dir``
    and loads the best weights back into ``model`` before returning.
    """
    from training.plots import plot_loss_curves

    device = device or select_device("auto")
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = None
    if cfg.lr_plateau_factor < 1.0:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.lr_plateau_factor, patience=max(1, cfg.patience // 2)
        )
    result = FitResult(history={"train_loss": [], "val_loss": [], "lr": []})
    ema = None
    if (
        cfg.ema_decay > 0
    ):  # weights averaged over steps (BatchNorm statistics too) are what is validated and saved
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        )
    ckpt = Path(run_dir) / "checkpoint.pt"
    t0 = time.monotonic()
    bad_epochs = 0
    for epoch in range(cfg.epochs):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            train_loader,
            desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
            unit="batch",
            mininterval=2.0,
        )
        for batch in bar:
            batch = to_device(batch, device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}")
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            n = batch_size(batch)
            total += float(loss.detach()) * n
            count += n
            bar.set_postfix(loss=f"{total / max(count, 1):.5f}", refresh=False)
            if cfg.max_minutes > 0 and time.monotonic() - t0 > cfg.max_minutes * 60:
                break  # budget spent mid-epoch: validate what was learnt so far, then stop below
        train_loss = total / max(count, 1)
        judged = model if ema is None else ema.module
        val_loss = _mean_loss(judged, val_loader, loss_fn, device)
        result.history["train_loss"].append(train_loss)
        result.history["val_loss"].append(val_loss)
        result.history["lr"].append(opt.param_groups[0]["lr"])
        result.epochs_run = epoch + 1
        if select_fn is not None:
            metric = float(select_fn(judged))
            result.history.setdefault("val_metric", []).append(metric)
            improved = (
                result.best_val_metric is None or metric > result.best_val_metric + cfg.min_delta
            )
            if improved:
                result.best_val_metric = metric
        else:
            improved = val_loss < result.best_val_loss - cfg.min_delta
        if improved:
            result.best_val_loss = val_loss
            result.best_epoch = epoch + 1
            torch.save(judged.state_dict(), ckpt)
            bad_epochs = 0
        else:
            bad_epochs += 1
        elapsed = time.monotonic() - t0
        if progress:
            shown = (
                f"  metric {result.history['val_metric'][-1]:.4f}" if select_fn is not None else ""
            )
            tqdm.write(
                f"{desc} epoch {epoch + 1}: train {train_loss:.5f}  val {val_loss:.5f}{shown}{'  *' if improved else ''}  ({elapsed:.0f} s)"
            )
        if sched is not None:
            sched.step(val_loss)
        if bad_epochs >= cfg.patience:
            result.stopped_early = True
            break
        if cfg.max_minutes > 0 and elapsed > cfg.max_minutes * 60:
            result.stopped_early = True
            if progress:
                tqdm.write(f"{desc}: wall-clock budget of {cfg.max_minutes} min reached")
            break
    result.seconds = time.monotonic() - t0
    result.checkpoint = str(ckpt)
    if ckpt.is_file():
        model.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
    write_json(Path(run_dir) / "history.json", result.to_dict())
    plot_loss_curves(result.history, Path(run_dir) / "loss_curve.png", title=desc)
    return result


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def predict_batches(
    model: nn.Module,
    arrays: tuple[np.ndarray, ...],
    batch: int = 1024,
    device: torch.device | None = None,
) -> list[np.ndarray]:
    """Run ``model(*inputs)`` over numpy arrays in batches; returns the outputs as numpy (tuple outputs kept)."""
    device = device or next(model.parameters()).device
    model.eval()
    outs: list[list[np.ndarray]] = []
    n = arrays[0].shape[0]
    with torch.no_grad():
        for s in range(0, n, batch):
            res = model(
                *(
                    torch.from_numpy(np.ascontiguousarray(a[s : s + batch])).to(device)
                    for a in arrays
                )
            )
            res_t = res if isinstance(res, (tuple, list)) else (res,)
            if not outs:
                outs = [[] for _ in res_t]
            for i, r in enumerate(res_t):
                outs[i].append(r.detach().cpu().numpy())
    return [np.concatenate(o) for o in outs]
