"""Self-supervised encoder training (issue 18): deterministic weights, early stopping, the split
recorded and honoured, the model round-tripping through the strict loader, and
`--encoder trained:NAME` running through the pipeline like any encoder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import make_cohort_files
from typer.testing import CliRunner

from pipelines import encoder_training as et
from pipelines.encoder import (
    ConvEncoder,
    EncoderSpec,
    build_encoder,
    check_state_dict,
    load_checkpoint,
    spec_from_options,
)
from pipelines.exceptions import InputError, LakeError
from pipelines.ingest import ingest
from pipelines.lake import Lake
from pipelines.pipeline import run_activations, run_quantify
from pipelines.scheduler import SchedulerSpec
from pipelines.sql import connect

# tiny and fast: 3+3 maps, 16^3 crops, one crop per patient and sequence
TINY = dict(blocks=(3, 3), crop=16, crops_per_sequence=1, batch_size=4, epochs=2, patience=1)


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    manifest = make_cohort_files(root / "cohort", n=4)
    lk = Lake(root / "lake")
    ingest(manifest, lk, clinical=root / "cohort" / "clinical.csv",
           immune=root / "cohort" / "immune.csv", progress=False)
    return lk


@pytest.fixture
def lake(base_lake, tmp_path):
    shutil.copytree(base_lake.root, tmp_path / "lake")
    return Lake(tmp_path / "lake")


def train(lake, name="tiny", progress=False, **kw):
    return et.train_encoder(lake, name, et.TrainSettings(**{**TINY, **kw}), progress=progress)


def test_same_seed_same_weights_other_seed_differs(lake):
    a = train(lake, "a", seed=0)
    b = train(lake, "b", seed=0)
    c = train(lake, "c", seed=1)
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["weights_sha256"] != c["weights_sha256"]
    # the same seed's trained weights start from, and move away from, the seeded weights
    seeded = build_encoder(EncoderSpec(blocks=(3, 3), seed=0))
    assert a["weights_sha256"] != seeded.weights_hash


def test_rerun_skips_and_changed_settings_retrain(lake):
    first = train(lake)
    assert not first["skipped"]
    again = train(lake)
    assert again["skipped"] and again["weights_sha256"] == first["weights_sha256"]
    other = train(lake, lr=1e-2)
    assert not other["skipped"] and other["weights_sha256"] != first["weights_sha256"]
    # the older content-addressed weights file is gone, the record points at the new one
    assert len(lake.model("tiny").files("weights-*.pt")) == 1


def test_model_record_has_hash_settings_fingerprint_and_loss_curve(lake):
    s = train(lake, epochs=3, patience=3)
    rec = et.load_model_record(lake, "tiny")
    assert rec["weights_sha256"] == s["weights_sha256"]
    assert rec["settings"]["seed"] == 0 and rec["settings"]["crop"] == 16
    assert rec["architecture"]["blocks"] == [3, 3]
    fps = lake.read_table("patients").set_index("patient_id")["fingerprint"]
    assert rec["data"]["volumes"] == {p: fps[p] for p in rec["data"]["volumes"]}
    assert [r["epoch"] for r in rec["loss_curve"]] == [1, 2, 3]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"])
               for r in rec["loss_curve"])
    runs = lake.runs()
    row = runs[runs["stage"] == "encoder_train"].iloc[-1]
    assert row["status"] == "ok" and row["encoder_hash"] == rec["identity_sha256"]


def test_model_round_trips_through_the_strict_loader(lake):
    s = train(lake)
    rec = et.load_model_record(lake, "tiny")
    path = lake.model("tiny").file(rec["weights_file"]).path
    state = load_checkpoint(__import__("pathlib").Path(path))  # a plain state_dict file
    check_state_dict(ConvEncoder(EncoderSpec(blocks=(3, 3))), state, path)
    with pytest.raises(InputError, match="shape mismatch"):
        check_state_dict(ConvEncoder(EncoderSpec(blocks=(4, 3))), state, path)
    enc = build_encoder(spec_from_options("trained:tiny", lake=lake))
    assert enc.name == "tiny" and enc.weights_hash == s["weights_sha256"]
    assert enc.identity_hash == rec["identity_sha256"]
    assert enc.describe()["weights"] == "trained"
    # a tampered weights file is refused
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(LakeError, match="does not match"):
        et.trained_spec(lake, "tiny")


def test_trained_spec_refuses_unknown_model_and_missing_lake(lake):
    with pytest.raises(LakeError, match="no trained encoder 'nope'"):
        spec_from_options("trained:nope", lake=lake)
    with pytest.raises(InputError, match="give --lake"):
        spec_from_options("trained:nope")
    with pytest.raises(InputError, match="trained encoder needs"):
        EncoderSpec(weights="trained", name="x")


def test_recorded_hash_mismatch_is_refused(lake):
    train(lake)
    spec = et.trained_spec(lake, "tiny")
    bad = EncoderSpec(blocks=spec.blocks, weights="trained", name="tiny",
                      extra={**spec.extra, "weights_sha256": "0" * 64})
    with pytest.raises(InputError, match="differs from the recorded"):
        build_encoder(bad)


def test_training_split_is_recorded_and_honoured(lake, monkeypatch):
    read = []
    original = et.patient_crops

    def spy(lk, pid, settings):
        read.append(pid)
        return original(lk, pid, settings)

    monkeypatch.setattr(et, "patient_crops", spy)
    s = et.train_encoder(lake, "split", et.TrainSettings(**TINY),
                         train_patients=["P001", "P002", "P003"], progress=False)
    rec = et.load_model_record(lake, "split")
    assert rec["split"]["held_out"] == ["P004"]
    assert sorted(rec["split"]["train"] + rec["split"]["validation"]) == ["P001", "P002", "P003"]
    assert len(rec["split"]["validation"]) == 1
    assert "P004" not in read and sorted(set(read)) == ["P001", "P002", "P003"]
    assert et.seen_patients(rec) == {"P001", "P002", "P003"}
    assert (s["n_train"], s["n_validation"], s["n_held_out"]) == (2, 1, 1)
    with pytest.raises(InputError, match="unknown patient"):
        et.train_encoder(lake, "x", et.TrainSettings(**TINY), train_patients=["P009", "P001"],
                         progress=False)


def test_holdout_fraction_leaves_patients_out():
    ids = [f"P{i:03d}" for i in range(20)]
    s = et.split_patients(ids, et.TrainSettings(holdout_fraction=0.25, seed=3))
    assert len(s["held_out"]) == 5 and len(s["validation"]) == 3 and len(s["train"]) == 12
    assert set(s["train"]) | set(s["validation"]) | set(s["held_out"]) == set(ids)
    assert s == et.split_patients(ids[::-1], et.TrainSettings(holdout_fraction=0.25, seed=3))
    # another training seed: another validation set, the same held-out patients
    other = et.split_patients(ids, et.TrainSettings(holdout_fraction=0.25, seed=4))
    assert other["held_out"] == s["held_out"] and other["validation"] != s["validation"]
    moved = et.split_patients(ids, et.TrainSettings(holdout_fraction=0.25, split_seed=1))
    assert moved["held_out"] != s["held_out"]


def test_early_stopping_stops_and_keeps_the_best_epoch():
    rng = np.random.default_rng(0)
    crops = rng.random((6, 1, 16, 16, 16), dtype=np.float32)
    # an improvement of 1e9 is never reached: stop after `patience` stale epochs
    s = et.TrainSettings(**{**TINY, "epochs": 10, "patience": 2, "min_delta": 1e9})
    fit = et.fit_encoder(crops[:4], crops[4:], s, progress=False)
    assert len(fit.history) == 3 and fit.stopped_early and fit.best_epoch == 1
    full = et.fit_encoder(crops[:4], crops[4:], et.TrainSettings(**{**TINY, "epochs": 3,
                                                                     "patience": 5}),
                          progress=False)
    assert len(full.history) == 3 and not full.stopped_early


def test_corruption_hides_blocks_and_adds_noise():
    rng = np.random.default_rng(0)
    clean = np.full((2, 1, 16, 16, 16), 0.5, np.float32)
    s = et.TrainSettings(crop=16, mask_block=4, mask_fraction=0.5, noise_sd=0.0)
    x, hidden = et.corrupt(clean, rng, s)
    assert x.shape == hidden.shape == clean.shape
    assert 0.2 < hidden.mean() < 0.8
    assert np.all(hidden[0, 0, :4, :4, :4] == hidden[0, 0, 0, 0, 0])  # whole 4^3 cubes
    assert np.allclose(x, 0.5)  # a constant crop's mean fills the holes
    loss = et.reconstruction_loss(torch.zeros(2, 1, 4, 4, 4), torch.ones(2, 1, 4, 4, 4),
                                  torch.zeros(2, 1, 4, 4, 4))
    assert float(loss) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["identity", "seeded", "cnn10x10-s0-0123abcd",
                                  "filters-pyradiomics-0123abcd", "../up", "", "a/b"])
def test_model_names_that_would_clash_or_escape_are_refused(name):
    with pytest.raises(InputError):
        et.check_model_name(name)


def test_run_with_trained_encoder_produces_features(lake):
    train(lake, "ssl-tiny")
    spec = spec_from_options("trained:ssl-tiny", lake=lake)
    act = run_activations(lake, spec, SchedulerSpec("sync"), progress=False)
    assert act["encoder"] == "ssl-tiny" and act["computed"] == 4
    q = run_quantify(lake, act["encoder"], sched=SchedulerSpec("sync"), progress=False)
    assert q["written"] == 8
    con = connect(lake)
    try:
        encs = con.execute("SELECT DISTINCT encoder FROM features").fetchall()
        drf = con.execute("SELECT * FROM drf WHERE encoder = 'ssl-tiny'").df()
    finally:
        con.close()
    assert encs == [("ssl-tiny",)] and len(drf) == 4
    run = lake.runs()
    params = json.loads(run[run["stage"] == "activations"].iloc[-1]["parameters"])
    assert "state" not in params["encoder"]["extra"]  # the run log names weights by hash


def test_cli_train_follows_the_interface(lake):
    from pipelines.encoder_cli import app

    args = ["train", "--lake", lake.root, "--name", "cli", "--epochs", "1", "--seed", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "encoder cli trained" in res.output and "trained:cli" in res.output
    again = CliRunner().invoke(app, args)
    assert "encoder cli unchanged" in again.output
    rec = et.load_model_record(lake, "cli")
    assert rec["settings"]["seed"] == 2 and rec["architecture"]["blocks"] == [10, 10]
