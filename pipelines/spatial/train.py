"""Training and prediction of the patch classifiers: binary cross-entropy, Adam, random dihedral
augmentation, early stopping on a dev split; seeded and deterministic on CPU.

Determinism: :func:`deterministic` seeds torch, turns on ``torch.use_deterministic_algorithms``
and fixes the thread count for the duration of a block, restoring the previous settings after.
Batches and augmentations are drawn from ``numpy.random.default_rng(seed)``. The same inputs,
configuration and seed give bit-identical weights and predictions on the same machine and
thread count.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from pipelines.exceptions import InputError
from pipelines.spatial.model import build_model
from pipelines.spatial.patches import dihedral, random_dihedral

__all__ = [
    "TrainConfig",
    "TrainResult",
    "deterministic",
    "model_from_bytes",
    "model_to_bytes",
    "predict_proba",
    "train_model",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (hashed into the run log).

    ``epochs``: maximum epochs; ``patience``: epochs without a lower dev loss before stopping
    (the weights of the best dev-loss epoch are restored); ``augment``: random 90-degree
    rotations and flips of every training patch each epoch; ``tta``: average predictions over the
    8 rotations/flips. ``width`` / ``dropout`` / ``stem``: model options (``stem`` for resnet50).
    ``threads``: torch threads while training (None: leave as is).
    """

    arch: str = "small"
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 20
    augment: bool = True
    tta: bool = True
    seed: int = 0
    width: int = 16
    dropout: float = 0.3
    stem: str = "patch"
    threads: int | None = None

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise InputError("epochs and patience must be >= 1 and batch_size >= 2")
        if self.lr <= 0 or self.weight_decay < 0:
            raise InputError("lr must be > 0 and weight_decay >= 0")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("threads")  # does not change results
        return d

    def model_kwargs(self) -> dict:
        """Return the keyword arguments of :func:`build_model` for this architecture."""
        if self.arch == "small":
            return {"width": self.width, "dropout": self.dropout}
        return {"stem": self.stem, "dropout": self.dropout if self.dropout < 1 else 0.0}


@dataclass
class TrainResult:
    """A trained model and how it got there.

    ``history``: one dict per epoch (epoch, train_loss, dev_loss, seconds); ``best_epoch``: the
    epoch whose weights were kept (1-based; the last epoch without a dev split);
    ``seconds_per_epoch``: mean wall time of an epoch (training + dev evaluation).
    """

    model: nn.Module
    config: TrainConfig
    in_channels: int
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(1, len(self.history))


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = None) -> Iterator[None]:
    """Seed torch, enable deterministic algorithms and (optionally) fix the thread count for the
    block; restore the previous settings afterwards."""
    was_det = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    was_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_det, warn_only=was_warn)
        if threads:
            torch.set_num_threads(was_threads)


def _check_xy(X, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if X.ndim != 4 or y.shape != (len(X),):
        raise InputError(f"{what}: need patches (n, C, H, W) and n labels, got {X.shape} and "
                         f"{y.shape}")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise InputError(f"{what}: labels must be 0 or 1")
    if not np.isfinite(X).all():
        raise InputError(f"{what}: patches contain NaN or infinite values")
    return X, y


def _bce(model: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """Return the mean BCE of the model (eval mode, no augmentation) on (X, y)."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(X))
        return float(nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y)))


def train_model(X_train, y_train, X_dev=None, y_dev=None,
                config: TrainConfig | None = None) -> TrainResult:
    """Train a patch classifier; return a :class:`TrainResult` holding the best model.

    ``X_*``: patches (n, C, H, W) float32; ``y_*``: 0/1 labels (n,). Loss: binary cross-entropy
    on logits; optimiser: Adam (``lr``, L2 ``weight_decay``); mini-batches of ``batch_size``
    reshuffled each epoch (a final batch of one sample is dropped: batch norm needs two). With a
    dev split, training stops after ``patience`` epochs without a lower dev loss and the best
    epoch's weights are restored; without one it runs ``epochs`` epochs.
    """
    cfg = config or TrainConfig()
    X_train, y_train = _check_xy(X_train, y_train, "training set")
    has_dev = X_dev is not None and len(X_dev) > 0
    if has_dev:
        X_dev, y_dev = _check_xy(X_dev, y_dev, "dev set")
        if X_dev.shape[1:] != X_train.shape[1:]:
            raise InputError(f"dev patches {X_dev.shape[1:]} differ from training patches "
                             f"{X_train.shape[1:]}")
    if len(X_train) < 2:
        raise InputError(f"need at least 2 training patches, got {len(X_train)}")
    t0 = time.perf_counter()
    with deterministic(cfg.seed, cfg.threads):
        model = build_model(cfg.arch, X_train.shape[1], seed=cfg.seed, **cfg.model_kwargs())
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        rng = np.random.default_rng(cfg.seed)
        loss_fn = nn.BCEWithLogitsLoss()
        result = TrainResult(model=model, config=cfg, in_channels=X_train.shape[1])
        best, best_state, stale = np.inf, None, 0
        for epoch in range(1, cfg.epochs + 1):
            te = time.perf_counter()
            model.train()
            order = rng.permutation(len(X_train))
            total, seen = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                if len(idx) < 2:
                    continue
                xb = X_train[idx]
                if cfg.augment:
                    xb = random_dihedral(xb, rng)
                opt.zero_grad()
                loss = loss_fn(model(torch.from_numpy(xb)), torch.from_numpy(y_train[idx]))
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
            row = {"epoch": epoch, "train_loss": total / max(1, seen), "dev_loss": None}
            if has_dev:
                row["dev_loss"] = _bce(model, X_dev, y_dev)
                if row["dev_loss"] < best - 1e-6:
                    best, best_state, stale = row["dev_loss"], copy.deepcopy(
                        model.state_dict()), 0
                    result.best_epoch = epoch
                else:
                    stale += 1
            row["seconds"] = time.perf_counter() - te
            result.history.append(row)
            if has_dev and stale >= cfg.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            result.best_epoch = len(result.history)
        model.eval()
    result.seconds = time.perf_counter() - t0
    return result


def predict_proba(model: nn.Module, X, tta: bool = True, batch_size: int = 256) -> np.ndarray:
    """Return P(label = 1) (n,) float64 for patches X (n, C, H, W).

    With ``tta`` the probability is the mean over the 8 rotations/flips of each patch (the
    model was trained on all of them, so this only averages out orientation noise).
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise InputError(f"patches must be (n, C, H, W), got {X.shape}")
    model.eval()
    out = np.empty(len(X), dtype=np.float64)
    ks = range(8) if tta else (0,)
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size]
            acc = np.zeros(len(xb))
            for k in ks:
                xt = torch.from_numpy(dihedral(xb, k) if k else xb)
                acc += torch.sigmoid(model(xt)).double().numpy()
            out[start:start + len(xb)] = acc / len(ks)
    return out


def model_to_bytes(result: TrainResult, meta: dict | None = None) -> bytes:
    """Return a checkpoint (torch.save of weights + JSON metadata) of a trained model."""
    info = {"arch": result.config.arch, "in_channels": result.in_channels,
            "config": result.config.as_dict(), "model_kwargs": result.config.model_kwargs(),
            "best_epoch": result.best_epoch, **(meta or {})}
    buf = io.BytesIO()
    torch.save({"state_dict": result.model.state_dict(), "meta": json.dumps(info)}, buf)
    return buf.getvalue()


def model_from_bytes(payload: bytes) -> tuple[nn.Module, dict]:
    """Return (model in eval mode, metadata dict) from :func:`model_to_bytes` output."""
    ckpt = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    meta = json.loads(ckpt["meta"])
    model = build_model(meta["arch"], meta["in_channels"], **meta["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, meta
