"""Self-supervised training of the drlake encoder on the lake's own volumes (issue 18).

Objective: masked denoising autoencoding of ROI crops. Every sample is a ``crop``^3 cube of one
sequence centred on a random voxel of the patient's mask (any region), intensities as stored in
the lake ([0, 1], the same input the pipeline gives the encoder). The input is corrupted: cubes
of ``mask_block``^3 voxels are hidden (set to the crop's mean) with probability
``mask_fraction`` and Gaussian noise of sd ``noise_sd`` is added everywhere; the network must
give back the clean crop. The network is the drlake encoder itself (:class:`ConvEncoder`, 2 x 10
maps by default, initialised with the ``seeded`` weights of the same seed) followed by a linear
head (one Conv3d over every block's maps, deeper blocks upsampled by nearest neighbour) that is
discarded after training. The loss is the mean squared error over hidden voxels plus the mean
squared error over visible voxels: filling hidden cubes needs the deeper block's context and
texture, removing noise needs the first block's local filters.

One sequence per sample (``in_channels`` 1): the pipeline runs the encoder on each sequence
separately, so one set of filters is learnt for all four sequences, as the seeded encoder has.

The patients are split (by patient, never by crop) into training and validation sets; training
stops when the validation loss has not improved by ``min_delta`` for ``patience`` epochs and the
best epoch's weights are kept. Patients can also be left out of training altogether
(``--train-patients`` or ``holdout_fraction``): the split is recorded with the model, so an
analysis can run on patients the encoder never saw (:mod:`pipelines.encoder_study`).

Determinism: crops, corruptions and batch order come from numpy generators keyed by the seed
(and the patient id), weights start from :func:`seeded_state_dict`, the head from
``torch.manual_seed``, deterministic algorithms are on and the thread count is fixed (1 by
default): the same seed, lake and settings give bit-identical weights on a CPU.

Lake layout (no new Lake method: written with ``Lake.put_bytes_atomic``)::

    models/encoders/<name>/weights-<sha16>.pt   torch.save(state_dict) of the encoder only
    models/encoders/<name>/model.json           architecture, weights hash, settings, split,
                                                data fingerprint, loss curve (the commit point)

The weights file is content-addressed and written first, then ``model.json`` replaces the old
record in one atomic write, then older weights files are removed: a reader sees the old model or
the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pipelines.encoder import (
    ConvEncoder,
    EncoderSpec,
    build_encoder,
    seeded_state_dict,
    weights_sha256,
)
from pipelines.exceptions import InputError, LakeError
from pipelines.lake import Lake, canonical_json, decode_array, sha256_text

log = logging.getLogger("drlake.encoder_training")

MODEL_FORMAT = "drlake-trained-encoder/1"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: 3D convolutions train about 3x faster on a CPU in channels-last layout (same results for a seed)
CHANNELS_LAST = torch.channels_last_3d
#: names of other encoders' activation folders: a model may not take them
RESERVED_RE = re.compile(r"^(identity|seeded|filters-.*|cnn[0-9x]+-(s[0-9]+|w)-[0-9a-f]{8})$")


@dataclass(frozen=True)
class TrainSettings:
    """Settings of encoder training (hashed into the model's key and the run log).

    epochs: maximum epochs; patience: epochs without a validation improvement of ``min_delta``
    before stopping. crop: crop edge (voxels); crops_per_sequence: crops drawn per patient and
    sequence (fixed for the run). mask_block (voxels), mask_fraction, noise_sd (intensity units
    of [0, 1]): the corruption. validation_fraction: patients (of the training pool) used for
    early stopping, drawn with ``seed``; holdout_fraction: patients of the cohort left out of
    training entirely (ignored when the training patients are given), drawn with
    ``split_seed``, so encoders of different seeds hold out the same patients. blocks /
    kernel / pool: the encoder's architecture. threads: torch threads while training (1:
    bit-identical across machines; not hashed); device: "auto" (CUDA when present), "cpu" or "cuda".
    """

    epochs: int = 8
    patience: int = 2
    min_delta: float = 1e-5
    crop: int = 32
    crops_per_sequence: int = 2
    batch_size: int = 8
    lr: float = 3e-3
    mask_block: int = 8
    mask_fraction: float = 0.3
    noise_sd: float = 0.05
    validation_fraction: float = 0.2
    holdout_fraction: float = 0.0
    split_seed: int = 0
    seed: int = 0
    blocks: tuple[int, ...] = (10, 10)
    kernel: int = 3
    pool: int = 2
    threads: int | None = 1
    device: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise InputError("--epochs, --patience and --batch-size must be >= 1")
        if self.crops_per_sequence < 1:
            raise InputError("--crops-per-sequence must be >= 1")
        need = self.pool ** (len(self.blocks) - 1) * 2
        if self.crop < need or self.crop % (self.pool ** (len(self.blocks) - 1)):
            raise InputError(f"--crop must be a multiple of {need // 2} and >= {need}, "
                             f"got {self.crop}")
        if not 1 <= self.mask_block <= self.crop:
            raise InputError(f"mask_block must be between 1 and the crop ({self.crop})")
        if not 0 <= self.mask_fraction < 1 or self.noise_sd < 0 or self.lr <= 0:
            raise InputError("mask_fraction must be in [0, 1), noise_sd >= 0 and lr > 0")
        if not 0 < self.validation_fraction < 1 or not 0 <= self.holdout_fraction < 1:
            raise InputError("--validation must be in (0, 1) and --holdout in [0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    def spec(self, name: str | None = None) -> EncoderSpec:
        """Return the architecture as a seeded EncoderSpec (the starting weights)."""
        return EncoderSpec(blocks=self.blocks, kernel=self.kernel, pool=self.pool,
                           weights="seeded", seed=self.seed, name=name)

    def as_dict(self) -> dict:
        """Return the JSON-able settings that change the weights (threads and device excluded)."""
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d.pop("threads")
        d.pop("device")
        return d


@dataclass
class FitResult:
    """A trained encoder: its state_dict, the loss curve and how training ended."""

    state: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    device: str = "cpu"

    @property
    def seconds_per_epoch(self) -> float:
        """Return the mean wall time of an epoch (s)."""
        return self.seconds / max(1, len(self.history))


# --------------------------------------------------------------------------- the network


class ReconstructionHead(nn.Module):
    """Linear decoder of every block's maps back to the crop (discarded after training)."""

    def __init__(self, blocks: tuple[int, ...], kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv3d(int(sum(blocks)), 1, kernel, padding=kernel // 2)

    def forward(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """Return the reconstruction (batch, 1, z, y, x) on the first block's grid."""
        size = outs[0].shape[2:]
        ups = [outs[0]] + [nn.functional.interpolate(o, size=size, mode="nearest")
                           for o in outs[1:]]
        return self.conv(torch.cat(ups, dim=1))


def corrupt(batch: np.ndarray, rng: np.random.Generator, settings: TrainSettings
            ) -> tuple[np.ndarray, np.ndarray]:
    """Return (corrupted input, hidden-voxel mask) of clean crops (n, 1, c, c, c) float32.

    Hidden cubes of ``mask_block`` voxels take the crop's mean; noise of sd ``noise_sd`` is added
    to every voxel. The mask is float32 of the same shape (1: hidden).
    """
    n, _, c = batch.shape[0], batch.shape[1], batch.shape[-1]
    b = settings.mask_block
    cells = -(-c // b)
    hide = rng.random((n, 1, cells, cells, cells)) < settings.mask_fraction
    hidden = hide.repeat(b, 2).repeat(b, 3).repeat(b, 4)[..., :c, :c, :c].astype(np.float32)
    mean = batch.mean(axis=(2, 3, 4), keepdims=True)
    x = batch * (1 - hidden) + mean * hidden
    x = x + settings.noise_sd * rng.standard_normal(batch.shape).astype(np.float32)
    return x.astype(np.float32), hidden


def reconstruction_loss(recon: torch.Tensor, clean: torch.Tensor,
                        hidden: torch.Tensor) -> torch.Tensor:
    """Return MSE over hidden voxels + MSE over visible voxels (a 0-d tensor)."""
    err = (recon - clean) ** 2
    n_hidden = hidden.sum()
    n_visible = hidden.numel() - n_hidden
    loss_visible = (err * (1 - hidden)).sum() / n_visible.clamp(min=1)
    return loss_visible + (err * hidden).sum() / n_hidden.clamp(min=1)


# --------------------------------------------------------------------------- training core


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device auto)")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _epoch_loss(encoder, head, crops, settings, rng, device, opt=None) -> float:
    """Return the mean loss over crops in batches; one optimiser step per batch when `opt`."""
    order = rng.permutation(len(crops)) if opt is not None else np.arange(len(crops))
    total = 0.0
    for start in range(0, len(order), settings.batch_size):
        clean = crops[order[start:start + settings.batch_size]]
        x, hidden = corrupt(clean, rng, settings)
        args = [torch.from_numpy(a).to(device).contiguous(memory_format=CHANNELS_LAST)
                for a in (x, clean, hidden)]
        with torch.set_grad_enabled(opt is not None):
            loss = reconstruction_loss(head(encoder(args[0])), args[1], args[2])
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        total += float(loss.detach().cpu()) * len(clean)
    return total / max(1, len(crops))


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Return a copy of a module's state_dict as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def fit_encoder(train_crops: np.ndarray, val_crops: np.ndarray, settings: TrainSettings,
                progress: bool = True) -> FitResult:
    """Train the encoder on crops (n, 1, c, c, c) float32; return the best epoch's weights.

    The validation loss uses the same corruption every epoch (a generator re-seeded per epoch),
    so epochs are compared on equal terms.
    """
    from pipelines.spatial.train import deterministic

    for what, a in (("training", train_crops), ("validation", val_crops)):
        if a.ndim != 5 or a.shape[1] != 1 or len(a) == 0:
            raise InputError(f"{what} crops must be (n >= 1, 1, c, c, c), got {a.shape}")
    spec = settings.spec()
    device = _device(settings.device)
    t0 = time.perf_counter()
    with deterministic(settings.seed, settings.threads):
        encoder = ConvEncoder(spec)
        encoder.load_state_dict(seeded_state_dict(spec), strict=True)
        head = ReconstructionHead(spec.blocks, spec.kernel)
        encoder.to(device, memory_format=CHANNELS_LAST).train()
        head.to(device, memory_format=CHANNELS_LAST).train()
        opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=settings.lr)
        rng = np.random.default_rng([settings.seed, 1])
        result = FitResult(state={}, device=str(device))
        best, best_state, stale = np.inf, None, 0
        bar = tqdm(range(1, settings.epochs + 1), desc="encoder train", disable=not progress)
        for epoch in bar:
            te = time.perf_counter()
            train_loss = _epoch_loss(encoder, head, train_crops, settings, rng, device, opt)
            val_loss = _epoch_loss(encoder, head, val_crops, settings,
                                   np.random.default_rng([settings.seed, 2]), device)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "seconds": round(time.perf_counter() - te, 3)}
            result.history.append(row)
            bar.set_postfix(train=f"{train_loss:.5f}", val=f"{val_loss:.5f}")
            log.info("encoder train: epoch %d/%d  train loss %.6f  validation loss %.6f  (%.1f s)",
                     epoch, settings.epochs, train_loss, val_loss, row["seconds"])
            if val_loss < best - settings.min_delta:
                best, stale, result.best_epoch = val_loss, 0, epoch
                best_state = _cpu_state(encoder)
            else:
                stale += 1
                if stale >= settings.patience:
                    result.stopped_early = epoch < settings.epochs
                    break
    result.state = best_state if best_state is not None else _cpu_state(encoder)
    result.seconds = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- crops from the lake


def _patient_rng(seed: int, patient_id: str) -> np.random.Generator:
    """Return a generator keyed by the seed and the patient id (independent of patient order)."""
    key = int(hashlib.sha256(patient_id.encode()).hexdigest()[:15], 16)
    return np.random.default_rng([seed, key])


def crop_box(centre: np.ndarray, crop: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Return the slices of a crop^3 box around `centre` (z, y, x), shifted inside `shape`.

    Along an axis shorter than the crop the box is the whole axis (the caller pads).
    """
    out = []
    for c, n in zip(centre, shape, strict=True):
        lo = int(min(max(0, c - crop // 2), max(0, n - crop)))
        out.append(slice(lo, min(n, lo + crop)))
    return tuple(out)


def patient_crops(lake: Lake, patient_id: str, settings: TrainSettings) -> np.ndarray:
    """Return a patient's crops (sequences x crops_per_sequence, 1, c, c, c) float32.

    Centres are random voxels of the mask (any label); only the crops are read from the image.
    Axes shorter than the crop are padded with the crop's edge values.
    """
    group = lake.volume(patient_id).open()
    rng = _patient_rng(settings.seed, patient_id)
    c = settings.crop
    out = []
    for mod in list(group.attrs["modalities"]):
        roi = np.argwhere(group["masks"][mod][...] > 0)
        if not len(roi):
            raise LakeError(f"{lake.url}: patient {patient_id} {mod}: the mask is empty")
        shape = group["images"][mod].shape
        for i in rng.integers(0, len(roi), settings.crops_per_sequence):
            a = decode_array(group["images"][mod], crop_box(roi[i], c, shape))
            pad = [(0, c - s) for s in a.shape]
            out.append(np.pad(a, pad, mode="edge").astype(np.float32)[None])
    return np.stack(out)


def cohort_crops(lake: Lake, patients: list[str], settings: TrainSettings,
                 progress: bool = False) -> np.ndarray:
    """Return the crops of every patient (in the given order), (n, 1, c, c, c) float32."""
    parts = [patient_crops(lake, pid, settings)
             for pid in tqdm(patients, desc="encoder crops", disable=not progress)]
    return np.concatenate(parts)


# --------------------------------------------------------------------------- split and records


def check_model_name(name: str) -> str:
    """Return a model name that is safe as a folder and an encoder name, else raise InputError."""
    s = str(name or "").strip()
    if not NAME_RE.fullmatch(s) or ".." in s:
        raise InputError(f"invalid model name {s!r}: use 1-64 letters, digits, '-', '_' and '.',"
                         " starting with a letter or digit")
    if RESERVED_RE.fullmatch(s):
        raise InputError(f"model name {s!r} is another encoder's name (identity, seeded, cnn..., "
                         "filters-...): choose another --name")
    return s


def split_patients(ids: list[str], settings: TrainSettings,
                   train_patients: list[str] | None = None) -> dict[str, list[str]]:
    """Return {"train", "validation", "held_out"} sorted patient ids.

    The training pool is `train_patients` if given (the other ids are held out), else the ids
    minus a ``holdout_fraction`` drawn with ``split_seed``; validation is a
    ``validation_fraction`` of the pool (at least one patient) drawn with ``seed``. Splits are
    by patient, seeded and independent of input order.
    """
    from pipelines.stats.splits import train_test_split_ids

    ids = sorted(ids)
    if train_patients is not None:
        unknown = sorted(set(train_patients) - set(ids))
        if unknown:
            raise InputError(f"--train-patients: unknown patient(s) {', '.join(unknown[:5])}; "
                             "give ids of the lake's cohort")
        pool = sorted(set(train_patients))
    elif settings.holdout_fraction > 0:
        n_pool = len(ids) - max(1, round(settings.holdout_fraction * len(ids)))
        if n_pool < 2:
            raise InputError(f"--holdout {settings.holdout_fraction} leaves fewer than 2 "
                             f"training patients of {len(ids)}")
        pool, _ = train_test_split_ids(ids, n_train=n_pool, seed=settings.split_seed)
    else:
        pool = ids
    if len(pool) < 2:
        raise InputError(f"need at least 2 training patients (train + validation), got "
                         f"{len(pool)}")
    n_val = min(len(pool) - 1, max(1, round(settings.validation_fraction * len(pool))))
    train, val = train_test_split_ids(pool, n_train=len(pool) - n_val, seed=settings.seed)
    return {"train": train, "validation": val, "held_out": sorted(set(ids) - set(pool))}


def seen_patients(record: dict) -> set[str]:
    """Return the patients whose volumes shaped a model's weights (training + validation)."""
    split = record.get("split") or {}
    return set(split.get("train", [])) | set(split.get("validation", []))


def _model_file(lake: Lake, name: str, file: str = "model.json"):
    return lake.model(check_model_name(name)).file(file)


def model_names(lake: Lake) -> list[str]:
    """Return the names of the trained encoders stored in the lake, sorted."""
    return lake.model_names()


def load_model_record(lake: Lake, name: str) -> dict:
    """Return a trained encoder's record (model.json) from the lake."""
    loc = _model_file(lake, name)
    if not loc.exists():
        have = model_names(lake)
        raise LakeError(f"{lake.url}: no trained encoder {name!r} (run `drlake encoder train "
                        f"--name {name}`); the lake has {', '.join(have) or 'none'}")
    return json.loads(loc.read_bytes())


def load_model_weights(lake: Lake, name: str, record: dict | None = None) -> bytes:
    """Return the torch.save bytes of a trained encoder's weights, checked against its record."""
    record = record or load_model_record(lake, name)
    loc = _model_file(lake, name, record["weights_file"])
    if not loc.exists():
        raise LakeError(f"{lake.url}: model {name}: weights file {record['weights_file']} is "
                        "missing; retrain with `drlake encoder train --force`")
    payload = loc.read_bytes()
    if hashlib.sha256(payload).hexdigest() != record["weights_file_sha256"]:
        raise LakeError(f"{lake.url}: model {name}: weights file does not match its record; "
                        "retrain with `drlake encoder train --force`")
    return payload


def trained_spec(lake: Lake | str, name: str) -> EncoderSpec:
    """Return the EncoderSpec of trained model `name`: its architecture, weights bytes and hash.

    The bytes travel in the spec, so cluster workers build the encoder without reading the lake.
    """
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    record = load_model_record(lake, name)
    arch = record["architecture"]
    return EncoderSpec(blocks=tuple(arch["blocks"]), kernel=arch["kernel"], pool=arch["pool"],
                       in_channels=arch["in_channels"], weights="trained",
                       seed=record["settings"]["seed"], name=record["name"],
                       extra={"model": record["name"], "state": load_model_weights(lake, name,
                                                                                   record),
                              "weights_sha256": record["weights_sha256"]})


def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """Return torch.save bytes of a state_dict (CPU tensors)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def write_model(lake: Lake, name: str, payload: bytes, record: dict) -> str:
    """Write a model's weights then its record atomically; remove older weights; return the
    record's path relative to the lake."""
    file_hash = hashlib.sha256(payload).hexdigest()
    weights_file = f"weights-{file_hash[:16]}.pt"
    record = {**record, "weights_file": weights_file, "weights_file_sha256": file_hash}
    _model_file(lake, name, weights_file).write_atomic(payload)
    rel = _model_file(lake, name).write_atomic(
        (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    for old in lake.model(name).files("weights-*.pt"):
        if not old.rel.endswith(weights_file):
            old.remove()
    return rel


# --------------------------------------------------------------------------- the stage


def _volume_fingerprints(lake: Lake, ids: list[str]) -> dict[str, str]:
    df = lake.read_table("patients").set_index("patient_id")
    return {pid: str(df.loc[pid, "fingerprint"]) for pid in ids}


def train_encoder(lake: Lake, name: str, settings: TrainSettings | None = None,
                  cohort: str = "main", train_patients: list[str] | None = None,
                  force: bool = False, progress: bool = True) -> dict:
    """Train an encoder on the cohort's volumes and store it as model `name`; return a summary.

    Skipped (summary["skipped"]) when the lake holds a model of that name trained with the same
    settings, split and volumes, unless `force`.
    """
    from pipelines.pipeline import cohort_patients

    settings = settings or TrainSettings()
    name = check_model_name(name)
    ids = [pid for pid, _ in cohort_patients(lake, cohort)]
    split = split_patients(ids, settings, train_patients)
    used = split["train"] + split["validation"]
    volumes = _volume_fingerprints(lake, used)
    data_fp = sha256_text(canonical_json(volumes))
    arch = settings.spec().architecture()
    key = sha256_text(canonical_json({"settings": settings.as_dict(), "split": split,
                                      "data": data_fp, "architecture": arch}))
    if not force and _model_file(lake, name).exists():
        old = load_model_record(lake, name)
        if old.get("key") == key:
            return {**old["summary"], "skipped": True}
    params = {"name": name, "settings": settings.as_dict(), "cohort": cohort,
              "n_train": len(split["train"]), "n_validation": len(split["validation"]),
              "n_held_out": len(split["held_out"])}
    with lake.run("encoder_train", params, input_fingerprints={"volumes": data_fp}) as run:
        t0 = time.perf_counter()
        train_crops = cohort_crops(lake, split["train"], settings, progress)
        val_crops = cohort_crops(lake, split["validation"], settings, progress)
        crop_seconds = time.perf_counter() - t0
        fit = fit_encoder(train_crops, val_crops, settings, progress)
        payload = state_to_bytes(fit.state)
        w_hash = weights_sha256(fit.state)
        encoder = build_encoder(EncoderSpec(  # the strict loader checks what we store
            blocks=settings.blocks, kernel=settings.kernel, pool=settings.pool,
            weights="trained", seed=settings.seed, name=name,
            extra={"model": name, "state": payload, "weights_sha256": w_hash}))
        run.encoder_hash = encoder.identity_hash
        summary = {"model": name, "path": _model_file(lake, name).rel,
                   "weights_sha256": w_hash, "identity_sha256": encoder.identity_hash,
                   "n_train": len(split["train"]), "n_validation": len(split["validation"]),
                   "n_held_out": len(split["held_out"]), "crops_train": len(train_crops),
                   "crops_validation": len(val_crops), "epochs": len(fit.history),
                   "best_epoch": fit.best_epoch, "stopped_early": fit.stopped_early,
                   "best_val_loss": min(r["val_loss"] for r in fit.history),
                   "seconds": round(fit.seconds, 3), "crop_seconds": round(crop_seconds, 3),
                   "seconds_per_epoch": round(fit.seconds_per_epoch, 3), "device": fit.device,
                   "run_id": run.run_id, "skipped": False}
        record = {
            "format": MODEL_FORMAT, "name": name, "key": key, "run_id": run.run_id,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "architecture": arch, "weights_sha256": w_hash,
            "identity_sha256": encoder.identity_hash,
            "objective": "masked denoising autoencoder of single-sequence ROI crops; linear "
                         "reconstruction head discarded",
            "settings": settings.as_dict(), "threads": settings.threads, "device": fit.device,
            "torch_version": torch.__version__, "cohort": cohort, "split": split,
            "data": {"fingerprint": data_fp, "volumes": volumes},
            "loss_curve": fit.history, "best_epoch": fit.best_epoch,
            "stopped_early": fit.stopped_early, "summary": summary}
        write_model(lake, name, payload, record)
        run.message = (f"model {name}: {len(fit.history)} epoch(s), best {fit.best_epoch} "
                       f"(validation loss {summary['best_val_loss']:.6f}), "
                       f"{len(split['train'])} train / {len(split['validation'])} validation / "
                       f"{len(split['held_out'])} held-out patients")
    return summary
