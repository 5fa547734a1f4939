"""Seed 004 models and training: shapes, the seed's ResNet-50 parameter count, seeded
initialisation, deterministic training, early stopping, checkpoints and test-time
augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pipelines.exceptions import InputError
from pipelines.spatial.model import build_model, count_parameters
from pipelines.spatial.patches import dihedral
from pipelines.spatial.train import (
    TrainConfig,
    deterministic,
    model_from_bytes,
    model_to_bytes,
    predict_proba,
    train_model,
)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def toy_patches(n=64, c=9, seed=0):
    """Patches whose label is whether a blob brightens the centre of channel 7 (like rCBV)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, c, 17, 17)).astype(np.float32)
    y = (np.arange(n) % 2).astype(np.float32)
    yy, xx = np.mgrid[-8:9, -8:9]
    blob = np.exp(-(yy**2 + xx**2) / (2 * 3.0**2)).astype(np.float32)
    X[:, 7] += 1.5 * y[:, None, None] * blob
    return X, y


@pytest.mark.parametrize("arch, kwargs", [("small", {}), ("resnet50", {}),
                                          ("resnet50", {"stem": "imagenet"})])
@pytest.mark.parametrize("channels", [9, 27])
def test_models_map_patches_to_one_logit(arch, kwargs, channels):
    model = build_model(arch, channels, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.zeros(3, channels, 17, 17))
    assert out.shape == (3,)


def test_resnet50_imagenet_stem_has_the_seeds_parameter_count():
    # the seed: 24,164,097 total = 24,110,977 trainable + 53,120 BN moving statistics
    model = build_model("resnet50", 9, stem="imagenet")
    assert count_parameters(model) == 24_110_977
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
    assert bn_stats == 53_120


def test_small_model_is_small():
    assert 5_000 < count_parameters(build_model("small", 9)) < 50_000


def test_seeded_initialisation():
    a, b, c = (build_model("small", 9, seed=s) for s in (3, 3, 4))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="architecture"):
        build_model("vgg", 9)
    with pytest.raises(InputError):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match="labels must be 0 or 1"):
        train_model(np.zeros((4, 9, 17, 17)), np.array([0, 1, 2, 0]))


def test_training_is_deterministic_and_learns_a_planted_signal():
    X, y = toy_patches(80)
    Xd, yd = toy_patches(32, seed=1)
    Xt, yt = toy_patches(32, seed=2)
    cfg = TrainConfig(epochs=12, patience=12, seed=7, threads=1)
    r1 = train_model(X, y, Xd, yd, cfg)
    r2 = train_model(X, y, Xd, yd, cfg)
    for p1, p2 in zip(r1.model.state_dict().values(), r2.model.state_dict().values(),
                      strict=True):
        assert torch.equal(p1, p2)
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    p1, p2 = predict_proba(r1.model, Xt), predict_proba(r2.model, Xt)
    np.testing.assert_array_equal(p1, p2)
    assert roc_auc_score(yt, p1) > 0.9
    r3 = train_model(X, y, Xd, yd, TrainConfig(epochs=12, patience=12, seed=8, threads=1))
    assert not np.array_equal(predict_proba(r3.model, Xt), p1)


def test_early_stopping_restores_the_best_dev_epoch():
    X, y = toy_patches(40)
    Xd, yd = toy_patches(16, seed=3)
    yd = 1 - yd  # an adversarial dev set: its loss rises as training succeeds
    r = train_model(X, y, Xd, yd, TrainConfig(epochs=40, patience=3, seed=0, threads=1))
    dev = [h["dev_loss"] for h in r.history]
    assert len(r.history) < 40
    assert r.best_epoch == int(np.argmin(dev)) + 1
    assert len(r.history) == r.best_epoch + 3
    from pipelines.spatial.train import _bce

    assert abs(_bce(r.model, Xd.astype(np.float32), yd.astype(np.float32)) - min(dev)) < 1e-6


def test_without_dev_set_runs_all_epochs():
    X, y = toy_patches(20)
    r = train_model(X, y, config=TrainConfig(epochs=3, seed=0, threads=1))
    assert len(r.history) == 3 and r.best_epoch == 3 and r.seconds_per_epoch > 0


def test_deterministic_restores_global_torch_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with deterministic(0, threads=1):
        assert torch.are_deterministic_algorithms_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_tta_prediction_is_invariant_under_rotations_and_flips():
    X, y = toy_patches(16)
    r = train_model(X, y, config=TrainConfig(epochs=2, seed=0, threads=1))
    base = predict_proba(r.model, X, tta=True)
    for k in (1, 5, 7):
        np.testing.assert_allclose(predict_proba(r.model, dihedral(X, k), tta=True), base,
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(predict_proba(r.model, dihedral(X, 1), tta=False),
                           predict_proba(r.model, X, tta=False))


def test_checkpoint_round_trip():
    X, y = toy_patches(16)
    r = train_model(X, y, config=TrainConfig(epochs=2, seed=0, threads=1))
    model, meta = model_from_bytes(model_to_bytes(r, {"patch_set": "demo"}))
    assert meta["arch"] == "small" and meta["in_channels"] == 9 and meta["patch_set"] == "demo"
    np.testing.assert_array_equal(predict_proba(model, X), predict_proba(r.model, X))
