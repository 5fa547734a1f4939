"""The 3D-CNN encoder whose activation maps become deep radiomic features (seed 000, section 2.3).

Default architecture: two blocks of Conv3d(3x3x3, padding 1) + ReLU with 10 maps each and a 2x2x2
max-pooling between them: layer 1 (stride 1) and layer 2 (stride 2), 20 maps in all, the paper's
count. Weights come from:

- ``seeded``: a fixed-seed He-uniform initialisation drawn with numpy's PCG64 generator, so the
  same seed gives bit-identical weights on every machine and torch version;
- a user checkpoint (a ``state_dict`` saved with ``torch.save``), loaded with strict key and
  shape checking;
- the identity encoder: the image itself is the only map (conventional radiomics, same path);
- a filter bank (``filters:NAME_OR_FILE``, IBSI 2): each filter response is a map
  (:mod:`pipelines.filters.encoder`); the bank itself travels in the spec, so cluster workers
  need no file;
- a model trained on the lake's own volumes (``trained:NAME``, :mod:`pipelines.encoder_training`):
  its state_dict bytes and recorded hash travel in the spec (``extra``), so cluster workers need
  no file either; the encoder is named NAME.

An encoder's identity is its architecture plus the sha256 of its weights; it names the lake's
activation folder and is recorded in the run log.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipelines.exceptions import InputError


@dataclass(frozen=True)
class EncoderSpec:
    """Architecture and weight source of an encoder.

    blocks: maps per block (each block is one Conv3d + ReLU; a max-pool of `pool` separates
    blocks). weights: "seeded", "identity", "filters" (extra["bank"] holds the bank), "trained"
    (extra["state"]: torch.save bytes of the state_dict, extra["weights_sha256"]: its recorded
    hash; name: the model's name), or a path to a .pt state_dict.
    """

    blocks: tuple[int, ...] = (10, 10)
    kernel: int = 3
    pool: int = 2
    in_channels: int = 1
    weights: str = "seeded"
    seed: int = 0
    name: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.is_filters and not isinstance(self.extra.get("bank"), dict):
            raise InputError("a filter-bank encoder needs its bank (use filters:NAME_OR_FILE)")
        if self.is_trained and not (isinstance(self.extra.get("state"), bytes) and self.name):
            raise InputError("a trained encoder needs its name and weights "
                             "(use trained:NAME with the lake)")
        if self.weights not in ("identity", "filters"):
            if not self.blocks or any(int(b) < 1 for b in self.blocks):
                raise InputError(f"encoder blocks must be positive map counts, got {self.blocks}")
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise InputError(f"encoder kernel must be odd and >= 1, got {self.kernel}")

    @property
    def is_identity(self) -> bool:
        return self.weights == "identity"

    @property
    def is_filters(self) -> bool:
        return self.weights == "filters"

    @property
    def is_trained(self) -> bool:
        return self.weights == "trained"

    def architecture(self) -> dict:
        """Return the JSON-able architecture (no weights)."""
        if self.is_identity:
            return {"type": "identity"}
        if self.is_filters:
            return {"type": "filter-bank", "bank": self.extra["bank"]}
        return {
            "type": "conv3d-relu-blocks",
            "blocks": list(self.blocks),
            "kernel": self.kernel,
            "pool": self.pool,
            "in_channels": self.in_channels,
        }


class ConvEncoder(nn.Module):
    """Blocks of Conv3d + ReLU with max-pooling between blocks; returns every block's output."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        convs = []
        cin = spec.in_channels
        for cout in spec.blocks:
            convs.append(nn.Conv3d(cin, int(cout), spec.kernel, padding=spec.kernel // 2))
            cin = int(cout)
        self.convs = nn.ModuleList(convs)
        self.pool = nn.MaxPool3d(spec.pool) if spec.pool > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the activations of every block, each (batch, maps, z, y, x)."""
        outs = []
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = self.pool(x)
            x = torch.relu(conv(x))
            outs.append(x)
        return outs


def seeded_state_dict(spec: EncoderSpec) -> dict[str, torch.Tensor]:
    """Return He-uniform weights and zero-mean small biases drawn from numpy PCG64(seed).

    Bit-identical on every machine: numpy's PCG64 stream and float64->float32 rounding are
    platform-independent, unlike torch's default initialisers across versions.
    """
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    state = {}
    cin = spec.in_channels
    k = spec.kernel
    for i, cout in enumerate(spec.blocks):
        fan_in = cin * k**3
        bound = np.sqrt(6.0 / fan_in)
        w = rng.uniform(-bound, bound, size=(int(cout), cin, k, k, k))
        b = rng.uniform(-0.1, 0.1, size=int(cout))
        state[f"convs.{i}.weight"] = torch.from_numpy(w.astype(np.float32))
        state[f"convs.{i}.bias"] = torch.from_numpy(b.astype(np.float32))
        cin = int(cout)
    return state


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """Return the sha256 over the state_dict's keys, shapes, dtypes and bytes (sorted keys)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class Encoder:
    """A ready-to-run encoder: the module (None for identity), its spec and identity."""

    spec: EncoderSpec
    module: ConvEncoder | None
    weights_hash: str

    @property
    def identity_hash(self) -> str:
        """Return sha256 of the architecture JSON + weights hash: the encoder's identity."""
        arch = json.dumps(self.spec.architecture(), sort_keys=True)
        return hashlib.sha256(f"{arch}|{self.weights_hash}".encode()).hexdigest()

    @property
    def name(self) -> str:
        """Return the folder name of the encoder's activations in the lake."""
        if self.spec.name:
            return self.spec.name
        if self.spec.is_identity:
            return "identity"
        blocks = "x".join(str(b) for b in self.spec.blocks)
        src = f"s{self.spec.seed}" if self.spec.weights == "seeded" else "w"
        return f"cnn{blocks}-{src}-{self.identity_hash[:8]}"

    @property
    def n_layers(self) -> int:
        return 1 if self.module is None else len(self.spec.blocks)

    @property
    def default_families(self) -> tuple[str, ...]:
        """Return the texture families quantify computes on this encoder's maps by default."""
        from pipelines.quantify import DEFAULT_FAMILIES

        return DEFAULT_FAMILIES

    def map_names(self) -> list[list[str]]:
        """Return the name of every map of every layer: "image" or "conv<k>.<map>"."""
        if self.module is None:
            return [["image"]]
        return [[f"conv{k}.{m}" for m in range(int(b))]
                for k, b in enumerate(self.spec.blocks, start=1)]

    def map_params(self) -> list[list[dict | None]]:
        """Return each map's filter spec (None: not a filter)."""
        return [[None] * len(names) for names in self.map_names()]

    def strides(self) -> list[int]:
        """Return the stride of every layer relative to the input grid."""
        if self.module is None:
            return [1]
        return [self.spec.pool**i for i in range(len(self.spec.blocks))]

    def margin(self, spacing_mm: float = 1.0) -> int:
        """Return the receptive-field half-width (voxels) of the deepest layer.

        Cropping the ROI's bounding box with this margin gives the same activations inside the
        ROI as running on the whole volume.
        """
        if self.module is None:
            return 0
        rf, jump = 1, 1
        for i in range(len(self.spec.blocks)):
            if i > 0:
                rf += (self.spec.pool - 1) * jump
                jump *= self.spec.pool
            rf += (self.spec.kernel - 1) * jump
        return rf // 2 + self.spec.pool ** (len(self.spec.blocks) - 1)

    def describe(self) -> dict:
        """Return the JSON-able identity recorded with activations and runs."""
        return {
            "name": self.name,
            "architecture": self.spec.architecture(),
            "weights": self.spec.weights if self.spec.weights in ("seeded", "identity", "trained")
            else "file",
            "seed": self.spec.seed if self.spec.weights == "seeded" else None,
            "weights_sha256": self.weights_hash,
            "identity_sha256": self.identity_hash,
            "default_families": list(self.default_families),
        }

    def activations(self, volume: np.ndarray, threads: int | None = None,
                    spacing=None) -> list[np.ndarray]:
        """Return every layer's activations of a (z, y, x) volume, each (maps, z', y', x').

        float32; layer k has stride `strides()[k]` (max-pooling floors odd sizes). `spacing` is
        not used (the CNN works in voxels); filter-bank encoders take it.
        """
        x = np.ascontiguousarray(volume, dtype=np.float32)
        if self.module is None:
            return [x[None]]
        if threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            outs = self.module(torch.from_numpy(x)[None, None])
        return [o[0].numpy() for o in outs]


def build_encoder(spec: EncoderSpec):
    """Return an Encoder for a spec, loading or generating its weights (a FilterEncoder for a
    filter bank)."""
    if spec.is_filters:
        from pipelines.filters.encoder import FilterEncoder, bank_from_dict

        return FilterEncoder(bank_from_dict(spec.extra["bank"], "the encoder's bank"))
    if spec.is_identity:
        return Encoder(spec, None, hashlib.sha256(b"identity").hexdigest())
    module = ConvEncoder(spec)
    if spec.weights == "seeded":
        state = seeded_state_dict(spec)
    elif spec.is_trained:
        state = state_from_bytes(spec.extra["state"], f"trained model {spec.name}")
    else:
        state = load_checkpoint(Path(spec.weights))
    source = f"trained model {spec.name}" if spec.is_trained else spec.weights
    check_state_dict(module, state, source)
    module.load_state_dict(state, strict=True)
    module.eval()
    digest = weights_sha256(module.state_dict())
    want = spec.extra.get("weights_sha256") if spec.is_trained else None
    if want and want != digest:
        raise InputError(f"{source}: weights hash {digest[:12]} differs from the recorded "
                         f"{want[:12]}; the model files are inconsistent: retrain it "
                         "(drlake encoder train --force)")
    return Encoder(spec, module, digest)


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Return the state_dict stored in a .pt file (weights only; no code is unpickled)."""
    if not path.exists():
        raise InputError(f"{path}: encoder weights file not found")
    return state_from_bytes(path.read_bytes(), str(path))


def state_from_bytes(payload: bytes, source: str) -> dict[str, torch.Tensor]:
    """Return the state_dict in torch.save bytes (weights only; no code is unpickled).

    `source` names the file or model in errors.
    """
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{source}: cannot load encoder weights ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(
            f"{source}: expected a state_dict of tensors (torch.save(model.state_dict()))"
        )
    return obj


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise InputError listing missing, unexpected and mis-shaped keys of a state_dict."""
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(
                "shape mismatch " + ", ".join(f"{k}: file {have[k]} vs model {want[k]}"
                                              for k in shapes)
            )
        raise InputError(f"{source}: weights do not fit the encoder architecture: "
                         + "; ".join(parts))


def spec_from_options(weights: str = "seeded", seed: int = 0, blocks: str = "10,10",
                      config: str | None = None, lake=None) -> EncoderSpec:
    """Return an EncoderSpec from CLI options (a JSON config file overrides the defaults).

    weights ``filters:NAME_OR_FILE`` reads a filter bank (a shipped one or a file) into the spec;
    ``trained:NAME`` reads the model NAME trained in `lake` (a Lake or its URL; its own
    architecture, so blocks and config do not apply).
    """
    if weights.startswith("filters:"):
        from pipelines.filters.encoder import load_bank

        return EncoderSpec(weights="filters", extra={"bank": load_bank(weights).as_dict()})
    if weights.startswith("trained:"):
        from pipelines.encoder_training import trained_spec

        if lake is None:
            raise InputError(f"--encoder {weights}: a trained encoder is read from a lake; "
                             "give --lake")
        return trained_spec(lake, weights.split(":", 1)[1])
    kw: dict = {}
    if config:
        p = Path(config)
        if not p.exists():
            raise InputError(f"{p}: encoder configuration not found")
        try:
            kw = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: invalid JSON ({exc})") from None
        allowed = {f for f in EncoderSpec.__dataclass_fields__}
        unknown = sorted(set(kw) - allowed)
        if unknown:
            raise InputError(f"{p}: unknown encoder option(s) {unknown}; allowed {sorted(allowed)}")
        if "blocks" in kw:
            kw["blocks"] = tuple(int(b) for b in kw["blocks"])
    else:
        try:
            kw["blocks"] = tuple(int(b) for b in blocks.split(","))
        except ValueError:
            raise InputError(
                f"--blocks expects comma-separated map counts, got {blocks!r}"
            ) from None
    kw.setdefault("weights", weights)
    kw.setdefault("seed", seed)
    return EncoderSpec(**kw)


def spec_as_dict(spec: EncoderSpec) -> dict:
    """Return a JSON-able dict of a spec."""
    d = asdict(spec)
    d["blocks"] = list(spec.blocks)
    if spec.is_filters:  # a bank is its filters, not a CNN's blocks
        return {"weights": "filters", "bank": spec.extra["bank"]}
    if spec.is_trained:  # the weights by their hash, not their bytes
        d["extra"] = {k: v for k, v in spec.extra.items() if k != "state"}
    return d
