"""Calibration probes: small synthetic models whose timings give the cost model's rates.

===================== ========================================== ===========================
probe                 model (fp32 unless noted)                   gives
===================== ========================================== ===========================
``overhead``          one Linear(4, 4) on a (1, 4) input          ``overhead_ms`` (p50),
                                                                  ``runtime_memory_mb`` (RSS)
``dispatch``          16 x Linear(4, 4)                           ``per_op_overhead_ms``
``matmul_fp32``       6 x Linear(512, 512) on (64, 512)           ``matmul_gops.fp32``
``matmul_fp32_small`` 8 x Linear(128, 128) on (32, 128)           ``matmul_fixed_ms.fp32``
``matmul_int8``       the big one, int8 dynamic (edge.compress)   ``matmul_gops.int8``
``matmul_int8_small`` the small one, int8 dynamic                 ``matmul_fixed_ms.int8``
``matmul_fp32_tiny``  8 x Linear(128, 128) on (1, 128)            ``matmul_curve.fp32``
``matmul_int8_tiny``  the tiny one, int8 dynamic                  ``matmul_curve.int8``
``matmul_fp32_wide``  6 x Linear 384->1536, 1536->384 on (64, ..)  ``matmul_curve.fp32``
``matmul_int8_wide``  the wide one, int8 dynamic                  ``matmul_curve.int8``
``activation``        8 x (LayerNorm, GELU, softmax, x*s+b) on    ``memory_gbs``
                      (64, 384): the memory ops real models run
``elementwise``       16 x (x * scale + shift) on (64, 512)       ``memory_gbs`` (optional;
                                                                  without ``activation``)
``elementwise_small`` the same on (4, 512) (optional)             ``memory_fixed_ms``
``transcendental``    8 x (GELU, softmax) on (64, 384)            ``transcendental_gbs``
``pool``              4 x MaxPool2d(3, 1, 1) on (1, 32, 32, 32)   ``pool_gbs``
``matmul_fp32_deep``  16 x Linear 384->1536, 1536->384 on (64, ..) ``effective_cache_mb``
                      (37.7 MB of weights: does the cache hold them?)
``conv``              4 x (depthwise 3x3 + 1x1) on (1, 32, 16, 16) ``conv_gops``
``conv_small``        the same on (1, 16, 8, 8)                   ``conv_fixed_ms``
``bandwidth``         Linear(4096, 4096) on (1, 4096): 64 MiB     ``bandwidth_gbs``
``mlp``               Linear 32->96 (bias), ReLU, 2 x 96->96,     ``term_scale``
                      96->16 on (1, 32)
``convnet``           3x3 stem conv 3->24 stride 2, BN, ReLU6,    ``term_scale``
                      3 x (depthwise 3x3, BN, ReLU6, 1x1, BN,
                      ReLU6), mean, Linear on (1, 3, 24, 24)
``transformer``       2 pre-norm blocks, dim 128, 4 heads, GELU   ``term_scale``
                      MLP 384 (LayerNorm, biases) on (1, 24, 128)
``llamablock``        2 Llama blocks, dim 64, 2 heads, SwiGLU     ``term_scale``
                      192 (RMSNorm, RoPE, causal mask) on
                      (1, 16, 64)
===================== ========================================== ===========================

The tiny, small, big and wide matmuls (0.03, 1, 34 and 75 MFLOP per call; the wide one's 2.4 MB weight
matrices do not fit a core's L2, as a transformer's FFN does not) give the cost model a
time-per-call curve over sizes (``matmul_curve``), per backend and dtype.

The last four are *composite* probes: small whole models built the way real ones are (biases,
normalizations, attention, 3-D activations, a 3-channel stem), at shapes of their own. The rates
come from the probes above; the composite ones show how those rates add up in a real graph, and
:mod:`edge.calibrate_fit` fits a scale per latency term (``term_scale``) to all the probes.

See :mod:`edge.calibrate` for how each timing becomes a rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

PROBE_NAMES = ("overhead", "dispatch", "matmul_fp32", "matmul_fp32_small", "matmul_int8",
               "matmul_int8_small", "matmul_fp32_tiny", "matmul_int8_tiny", "matmul_fp32_wide", "matmul_int8_wide", "activation", "elementwise",
               "elementwise_small", "transcendental", "pool", "matmul_fp32_deep", "conv", "conv_small",
               "bandwidth", "mlp", "convnet", "transformer", "llamablock")
# whole small models (counted by edge.planner.stats like a user's model): they fit term_scale
COMPOSITE_KINDS = ("mlp", "convnet", "transformer", "llamablock")
PROBE_KINDS = ("linear", "elementwise", "activation", "transcendental", "pool", "conv", "convblock",
               *COMPOSITE_KINDS)
# graph ops per activation layer, as edge.planner.stats counts them: layer_norm, gelu, softmax,
# mul, add and the two selects of the per-layer scale and shift
ACTIVATION_OPS = 7
FP32_BYTES = 4
INT8_ROW_BYTES = 8  # per-channel scale + zero point, as the cost model counts them


@dataclass(frozen=True)
class Probe:
    """One synthetic model and what its timing measures.

    ``kind`` "linear": a (rows, width_in) input through ``layers`` Linear layers alternating
    width_in -> width_out and back (``layers`` even when they differ); "activation": a (rows,
    width_in) input through ``layers`` of LayerNorm, GELU, softmax and ``x * scale + shift``
    (five memory ops, seven graph ops); "transcendental": the same input through ``layers`` of
    GELU and softmax (two ops); "pool": a (1, width_in, rows, rows) input through ``layers``
    of a 3x3 max pool, stride 1; "convblock": a "conv" whose convs are each followed
    by BatchNorm and ReLU (not a default probe: the cost model counts those as epilogues, which
    XNNPACK and TFLite fold into the conv);
    "elementwise": a (rows, width_in) input through ``layers`` of ``x * scale + shift`` (two
    ops, per-column vectors); "conv": a (1, width_in, rows, rows) input through ``layers`` of a depthwise 3x3 and a pointwise 1x1 conv (two ops).
    ``recipe`` holds technique configs as dicts (empty = fp32).
    """

    name: str
    rows: int
    width_in: int
    width_out: int
    layers: int
    iterations: int
    recipe: tuple[dict, ...] = ()
    tag: str | None = None  # artifact folder suffix
    kind: str = "linear"
    context: int | None = None  # "decoder" probes: the KV cache's positions (None: edge.calibrate_decode's)
    vocab: int | None = None  # "decoder" probes: the vocabulary (None: edge.calibrate_decode's)
    decode_tokens: int | None = None  # "decoder" probes: tokens decoded (None: bench's 64, within the context)

    @property
    def ops(self) -> int:
        per_layer = {"linear": 1, "activation": ACTIVATION_OPS, "convblock": 6, "pool": 1}.get(self.kind, 2)
        return per_layer * self.layers

    @property
    def memory_bytes(self) -> float:
        """Bytes the memory ops between the matmuls read and write (a "convblock"'s BN and ReLU:
        x in and out each, BN's four per-channel vectors), as edge.planner.stats counts them."""
        if self.kind != "convblock":
            return 0.0
        n, c = self.width_in * self.rows ** 2, self.width_in
        return float(self.layers * 2 * (4 * n + 4 * c) * FP32_BYTES)

    @property
    def flops(self) -> float:
        if self.kind in ("conv", "convblock"):
            return 2.0 * self.width_in * self.rows ** 2 * (9 + self.width_in) * self.layers
        if self.kind in ("elementwise", "activation", "transcendental", "pool", "decoder", *COMPOSITE_KINDS):
            return 0.0  # a decoder's or a composite's counts come from its model
        return 2.0 * self.rows * self.width_in * self.width_out * self.layers

    @property
    def bytes_read(self) -> float:
        """Weights at their precision plus fp32 activations in and out of each op."""
        if self.kind in ("decoder", *COMPOSITE_KINDS):
            return 0.0  # counted from its model (edge.calibrate_decode, edge.planner.stats)
        if self.kind == "elementwise":
            return float(self.ops * (2 * self.rows + 1) * self.width_in * FP32_BYTES)
        if self.kind == "activation":  # each op reads and writes the activations; norm/affine params
            n, w = self.rows * self.width_in, self.width_in
            return float(self.layers * (10 * n + 4 * w + 2 * self.rows) * FP32_BYTES)
        if self.kind in ("conv", "convblock"):
            return float(self.layers * (self.width_in * (9 + self.width_in)
                                        + 4 * self.width_in * self.rows ** 2) * FP32_BYTES)
        params = self.width_in * self.width_out * self.layers
        weights = params + self.width_out * self.layers * INT8_ROW_BYTES if self.recipe \
            else params * FP32_BYTES
        activations = self.layers * self.rows * (self.width_in + self.width_out) * FP32_BYTES
        return float(weights + activations)


def default_probes() -> list[Probe]:
    """The probes of the module docstring, the overhead probe first, less the optional
    ``elementwise`` and ``elementwise_small`` (``activation`` measures the memory ops' rate on
    the ops real models run; a fixed cost that measured ~0 on the host costs a runner start;
    pass them in ``probes`` to measure them)."""
    from .compress import Int8DynamicConfig

    int8 = {"recipe": (Int8DynamicConfig().to_dict(),), "tag": "int8"}
    return [
        Probe("overhead", rows=1, width_in=4, width_out=4, layers=1, iterations=200),
        Probe("dispatch", rows=1, width_in=4, width_out=4, layers=16, iterations=200),
        Probe("matmul_fp32", rows=64, width_in=512, width_out=512, layers=6, iterations=50),
        Probe("matmul_fp32_small", rows=32, width_in=128, width_out=128, layers=8, iterations=200),
        Probe("matmul_int8", rows=64, width_in=512, width_out=512, layers=6, iterations=50, **int8),
        Probe("matmul_int8_small", rows=32, width_in=128, width_out=128, layers=8, iterations=200, **int8),
        Probe("matmul_fp32_tiny", rows=1, width_in=128, width_out=128, layers=8, iterations=200),
        Probe("matmul_int8_tiny", rows=1, width_in=128, width_out=128, layers=8, iterations=200, **int8),
        Probe("matmul_fp32_wide", rows=64, width_in=384, width_out=1536, layers=6, iterations=30),
        Probe("matmul_int8_wide", rows=64, width_in=384, width_out=1536, layers=6, iterations=30, **int8),
        Probe("activation", rows=64, width_in=384, width_out=384, layers=8, iterations=100,
              kind="activation"),
        Probe("transcendental", rows=64, width_in=384, width_out=384, layers=8, iterations=100,
              kind="transcendental"),
        Probe("pool", rows=32, width_in=32, width_out=32, layers=4, iterations=100, kind="pool"),
        Probe("matmul_fp32_deep", rows=64, width_in=384, width_out=1536, layers=16, iterations=20),
        Probe("conv", rows=16, width_in=32, width_out=32, layers=4, iterations=200, kind="conv"),
        Probe("conv_small", rows=8, width_in=16, width_out=16, layers=4, iterations=200, kind="conv"),
        Probe("bandwidth", rows=1, width_in=4096, width_out=4096, layers=1, iterations=30),
        *composite_probes(),
    ]


def composite_probes() -> list[Probe]:
    """The whole-model probes of the module docstring (fp32: their rates are the ones above)."""
    return [
        Probe("mlp", rows=1, width_in=32, width_out=96, layers=4, iterations=200, kind="mlp"),
        Probe("convnet", rows=24, width_in=24, width_out=24, layers=3, iterations=100, kind="convnet"),
        Probe("transformer", rows=24, width_in=128, width_out=384, layers=2, iterations=50,
              kind="transformer"),
        Probe("llamablock", rows=16, width_in=64, width_out=192, layers=2, iterations=100,
              kind="llamablock"),
    ]


def probes_by_backend(backends: list[str], probes: list[Probe] | None = None) -> dict[str, list[Probe]]:
    """Which probes run on which backend.

    A backend whose conversion is slow skips its ``calibration_skipped_probes`` when another
    backend is calibrated with it (a device property measured there, or a term its runtime
    makes small); a backend of language models only gets none of these probes.
    """
    probes = list(probes) if probes is not None else default_probes()
    names = [p.name for p in probes]
    unknown = sorted(set(names) - set(PROBE_NAMES))
    if unknown or "overhead" not in names or len(set(names)) != len(names):
        raise ConfigError(f"expected distinct probes named from {', '.join(PROBE_NAMES)} including "
                          f"'overhead', found {names}")
    kinds = sorted({p.kind for p in probes} - set(PROBE_KINDS))
    if kinds:
        raise ConfigError(f"expected probe kinds from {', '.join(PROBE_KINDS)}, found {kinds}")
    from .backends import get_backend

    out = {}
    for backend in backends:
        be = get_backend(backend)
        skipped = be.calibration_skipped_probes if len(backends) > 1 else ()
        # a backend of language models only runs the decoder probes (edge.calibrate_decode)
        out[backend] = [] if be.language_models_only else [p for p in probes if p.name not in skipped]
    return out


def _probe_module(probe: Probe, gen: Any):
    """The probe's torch module (weights from ``gen``, unit-variance activations throughout)."""
    import torch
    from torch import nn

    class Activation(nn.Module):
        """``layers`` of LayerNorm, GELU, softmax over the last dim and ``x * scale + shift``."""

        def __init__(self, width: int, layers: int):
            super().__init__()
            self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(layers))
            self.scale = nn.Parameter(1.0 + 0.01 * torch.randn(layers, width, generator=gen))
            self.shift = nn.Parameter(0.01 * torch.randn(layers, width, generator=gen))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i, norm in enumerate(self.norms):
                x = torch.softmax(nn.functional.gelu(norm(x)), dim=-1) * self.scale[i] + self.shift[i]
            return x

    class Elementwise(nn.Module):
        """``layers`` of ``x * scale + shift`` with per-column vectors."""

        def __init__(self, width: int, layers: int):
            super().__init__()
            self.scale = nn.Parameter(1.0 + 0.01 * torch.randn(layers, width, generator=gen))
            self.shift = nn.Parameter(0.01 * torch.randn(layers, width, generator=gen))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for i in range(self.scale.shape[0]):
                x = x * self.scale[i] + self.shift[i]
            return x

    class Transcendental(nn.Module):
        """``layers`` of GELU and softmax over the last dim."""

        def __init__(self, layers: int):
            super().__init__()
            self.layers = layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(self.layers):
                x = torch.softmax(nn.functional.gelu(x), dim=-1)
            return x

    if probe.kind in COMPOSITE_KINDS:
        from .calibrate_composite import composite_module

        return composite_module(probe, gen)
    if probe.kind == "elementwise":
        return Elementwise(probe.width_in, probe.layers)
    if probe.kind == "transcendental":
        return Transcendental(probe.layers)
    if probe.kind == "pool":
        return nn.Sequential(*(nn.MaxPool2d(3, 1, 1) for _ in range(probe.layers)))
    if probe.kind == "activation":
        return Activation(probe.width_in, probe.layers)
    c = probe.width_in
    if probe.kind == "conv":
        layers = [m for _ in range(probe.layers) for m in (nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False),
                                                            nn.Conv2d(c, c, 1, bias=False))]
    elif probe.kind == "convblock":
        layers = [m for _ in range(probe.layers) for m in (
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())]
    else:
        o = probe.width_out
        layers = [nn.Linear(c, o, bias=False) if i % 2 == 0 else nn.Linear(o, c, bias=False)
                  for i in range(probe.layers)]
    for layer in layers:
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        fan_in = layer.weight[0].numel()
        layer.weight.data = torch.randn(layer.weight.shape, generator=gen) / fan_in ** 0.5
    return nn.Sequential(*layers)


def probe_spec(probe: Probe):
    """The probe as a ModelSpec (deterministic weights, so the export cache can reuse it)."""
    import torch

    from .models.loaders import spec_from_factory_result

    conv = probe.kind in ("conv", "convblock", "pool")
    shape = (1, probe.width_in, probe.rows, probe.rows) if conv else (probe.rows, probe.width_in)
    if probe.kind in ("transformer", "llamablock"):
        shape = (1, probe.rows, probe.width_in)
    elif probe.kind == "convnet":
        shape = (1, 3, probe.rows, probe.rows)
    with torch.no_grad():
        model = _probe_module(probe, torch.Generator().manual_seed(0)).eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return spec_from_factory_result((model, (x,)), name=f"calibrate-{probe.name}",
                                    where="edge.calibrate")
