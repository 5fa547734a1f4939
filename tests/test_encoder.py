"""The encoder: seeded weights reproducible, checkpoints strictly checked, crops exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.encoder import EncoderSpec, build_encoder, seeded_state_dict, spec_from_options
from pipelines.exceptions import InputError


def test_seeded_weights_are_bit_identical_and_seed_dependent():
    a = seeded_state_dict(EncoderSpec(seed=3))
    b = seeded_state_dict(EncoderSpec(seed=3))
    c = seeded_state_dict(EncoderSpec(seed=4))
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["convs.0.weight"], c["convs.0.weight"])
    assert build_encoder(EncoderSpec(seed=3)).weights_hash == build_encoder(
        EncoderSpec(seed=3)).weights_hash


def test_default_is_two_blocks_of_ten_maps():
    enc = build_encoder(EncoderSpec())
    outs = enc.activations(np.random.default_rng(0).random((16, 18, 20), dtype=np.float32))
    assert [o.shape for o in outs] == [(10, 16, 18, 20), (10, 8, 9, 10)]
    assert enc.strides() == [1, 2]
    assert all((o >= 0).all() for o in outs)  # ReLU


def test_identity_encoder_returns_the_image():
    enc = build_encoder(EncoderSpec(weights="identity"))
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (out,) = enc.activations(vol)
    np.testing.assert_array_equal(out[0], vol)
    assert enc.name == "identity"


def test_crop_with_margin_gives_the_same_activations_inside(tmp_path):
    enc = build_encoder(EncoderSpec())
    rng = np.random.default_rng(1)
    vol = rng.random((40, 40, 40), dtype=np.float32)
    full = enc.activations(vol)
    m = enc.margin()
    z0, z1 = 14, 26  # ROI box, even start so that the pooled grids align
    lo, hi = z0 - m - (z0 - m) % 2, z1 + m
    crop = enc.activations(vol[lo:hi, lo:hi, lo:hi])
    np.testing.assert_allclose(crop[0][:, z0 - lo:z1 - lo, z0 - lo:z1 - lo, z0 - lo:z1 - lo],
                               full[0][:, z0:z1, z0:z1, z0:z1], rtol=1e-5, atol=1e-6)
    s = 2
    a, b = z0 // s, z1 // s
    off = lo // s
    np.testing.assert_allclose(crop[1][:, a - off:b - off, a - off:b - off, a - off:b - off],
                               full[1][:, a:b, a:b, a:b], rtol=1e-5, atol=1e-6)


def test_checkpoint_round_trip_and_strict_checks(tmp_path):
    enc = build_encoder(EncoderSpec(seed=5))
    path = tmp_path / "w.pt"
    torch.save(enc.module.state_dict(), path)
    loaded = build_encoder(EncoderSpec(weights=str(path)))
    assert loaded.weights_hash == enc.weights_hash
    bad = dict(enc.module.state_dict())
    bad["convs.1.weight"] = torch.zeros(10, 10, 5, 5, 5)
    bad["extra.weight"] = torch.zeros(1)
    del bad["convs.1.bias"]
    torch.save(bad, path)
    with pytest.raises(InputError) as err:
        build_encoder(EncoderSpec(weights=str(path)))
    msg = str(err.value)
    assert "missing keys ['convs.1.bias']" in msg
    assert "unexpected keys ['extra.weight']" in msg
    assert "convs.1.weight: file (10, 10, 5, 5, 5) vs model (10, 10, 3, 3, 3)" in msg


def test_config_file_gives_another_architecture(tmp_path):
    cfg = tmp_path / "enc.json"
    cfg.write_text('{"blocks": [4, 6, 8], "seed": 2}')
    enc = build_encoder(spec_from_options(config=str(cfg)))
    outs = enc.activations(np.zeros((16, 16, 16), np.float32))
    assert [o.shape[0] for o in outs] == [4, 6, 8]
    assert enc.strides() == [1, 2, 4]
    cfg.write_text('{"layers": 3}')
    with pytest.raises(InputError, match="unknown encoder option"):
        spec_from_options(config=str(cfg))


def test_trained_spec_carries_its_weights_and_is_logged_by_hash():
    import io

    from pipelines.encoder import spec_as_dict, weights_sha256

    spec = EncoderSpec(blocks=(2, 2), seed=3)
    state = seeded_state_dict(spec)
    buf = io.BytesIO()
    torch.save(state, buf)
    trained = EncoderSpec(blocks=(2, 2), weights="trained", name="mine",
                          extra={"state": buf.getvalue(), "weights_sha256": weights_sha256(state)})
    enc = build_encoder(trained)  # no file, no lake: the bytes travel in the spec
    assert enc.name == "mine" and enc.weights_hash == weights_sha256(state)
    assert enc.describe()["weights"] == "trained"
    x = np.random.default_rng(0).random((8, 8, 8), dtype=np.float32)
    same = build_encoder(spec).activations(x)
    assert all(np.array_equal(a, b) for a, b in zip(enc.activations(x), same, strict=True))
    logged = spec_as_dict(trained)
    assert "state" not in logged["extra"] and logged["extra"]["weights_sha256"]
    with pytest.raises(InputError, match="weights do not fit"):
        build_encoder(EncoderSpec(blocks=(3, 2), weights="trained", name="mine",
                                  extra={"state": buf.getvalue()}))
    with pytest.raises(InputError, match="cannot load encoder weights"):
        build_encoder(EncoderSpec(weights="trained", name="mine", extra={"state": b"junk"}))
