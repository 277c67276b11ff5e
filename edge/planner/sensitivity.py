"""Measured accuracy of compression choices, on the host, on calibration inputs.

Each measurement compresses a fresh fp32 copy of the model with a recipe (usually one
technique on one layer group), runs it eagerly on a subset of ``spec.calib_inputs`` (never
the evaluation inputs) and scores it with the model's own metric against the fp32 outputs.
The host *flavour* follows the backend: ``torchscript`` uses torch.ao's dynamic
quantization (it loses more accuracy than torchao's); ``executorch`` and ``tflite`` use the
torchao/PT2E eager model (for tflite an emulation: onnx2tf quantizes during conversion).
Results are cached in memory per (model, recipe, flavour, samples).

A quantizing recipe that leaves every weight of its groups as it was (a model dequantized from a
GGUF file is already on that file's grid) is recorded too (:func:`unchanged_weights`): its
accuracy is this model's, not that of the model before it was quantized.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Sequence

import torch

from ..compress import CompressContext, TechniqueConfig, apply
from ..evaluate import score

if TYPE_CHECKING:  # annotations only
    from ..models.base import ModelSpec

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 32
_SCORES: dict[tuple, float] = {}
_REFERENCES: dict[tuple, list] = {}
_UNCHANGED: dict[tuple, bool] = {}
# techniques that only round weights (structure and values otherwise kept)
_QUANTIZING = ("int8_dynamic", "int8_static", "int4_weight", "embedding_quant", "fp16")


def flavour_of(backend: str) -> str:
    """The host flavour whose eager model stands in for ``backend``'s numerics (the backend says)."""
    if backend == "eager":
        return backend
    from ..backends import get_backend

    return get_backend(backend).host_flavour


def _inputs(spec: ModelSpec, samples: int) -> list[tuple]:
    return list(spec.calib_inputs[:samples])


def calibration_basis(spec: ModelSpec, samples: int) -> str:
    """What a measurement scores on: the calibration inputs used, and for a language model their tokens."""
    used = _inputs(spec, samples)
    text = f"{len(used)} calibration inputs"
    if spec.generation is not None and used:
        text += f" ({sum(int(inp[0].numel()) for inp in used):,} tokens)"
    return text


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def _outputs(model: torch.nn.Module, inputs: Sequence[tuple]) -> list:
    """Per-sample outputs; one batched forward when the model accepts a batch (much faster)."""
    batch = tuple(torch.cat(parts, 0) for parts in zip(*inputs))
    try:
        out = _first(model(*batch)).detach().float()
        if out.shape[0] == len(inputs):
            return [out[i:i + 1].numpy() for i in range(len(inputs))]
    except (RuntimeError, AssertionError, ValueError) as exc:  # fixed-batch graphs (PT2E)
        log.debug("batched forward failed (%s); running samples one by one", exc)
    return [_first(model(*inp)).detach().float().numpy() for inp in inputs]


def reference_outputs(spec: ModelSpec, samples: int = DEFAULT_SAMPLES) -> list:
    """fp32 outputs on the calibration subset (cached)."""
    key = (spec.name, spec.source, samples)
    if key not in _REFERENCES:
        _REFERENCES[key] = _outputs(spec.model.eval(), _inputs(spec, samples))
    return _REFERENCES[key]


def _key(spec: ModelSpec, recipe: Sequence[TechniqueConfig], backend: str, samples: int) -> tuple:
    return (spec.name, spec.source, json.dumps([c.to_dict() for c in recipe], sort_keys=True),
            flavour_of(backend), samples)


def compress_and_score(spec: ModelSpec, recipe: Sequence[TechniqueConfig], backend: str,
                       samples: int = DEFAULT_SAMPLES) -> tuple[float, torch.nn.Module]:
    """Compress a fresh copy with ``recipe`` in ``backend``'s flavour; (metric, compressed model)."""
    model = spec.fresh_model()
    ctx = CompressContext(backend=flavour_of(backend), spec=spec)
    for config in recipe:
        model = apply(model, config, ctx)
    inputs = _inputs(spec, samples)
    value = score(spec.metric, reference_outputs(spec, samples), _outputs(model.eval(), inputs), inputs)
    log.debug("sensitivity %s %s: %.5f", flavour_of(backend), [c.label() for c in recipe], value)
    _SCORES[_key(spec, recipe, backend, samples)] = value
    _UNCHANGED[_key(spec, recipe, backend, samples)] = _weights_unchanged(spec.model, model, recipe)
    return value, model


def unchanged_weights(spec: ModelSpec, recipe: Sequence[TechniqueConfig], backend: str,
                      samples: int = DEFAULT_SAMPLES) -> bool:
    """True when quantizing ``recipe`` left every weight of its groups as it was (see the module doc),
    as recorded when it was measured; False for a recipe not measured (nothing is measured here)."""
    return _UNCHANGED.get(_key(spec, recipe, backend, samples), False)


def _dense(weight) -> torch.Tensor | None:
    """A module's weight as a plain float tensor (dequantized where the quantizer wraps it)."""
    try:
        w = weight() if callable(weight) and not isinstance(weight, torch.Tensor) else weight  # torch.ao packs
        if not isinstance(w, torch.Tensor):
            return None
        w = w.detach()
        if w.is_quantized or (type(w) not in (torch.Tensor, torch.nn.Parameter) and hasattr(w, "dequantize")):
            w = w.dequantize()
        return w.float()
    except Exception:  # noqa: BLE001  a layout with no dequantization: cannot tell, so not "unchanged"
        return None


def _weights_unchanged(before: torch.nn.Module, after: torch.nn.Module, recipe: Sequence[TechniqueConfig]) -> bool:
    from ..compress.groups import GROUP_NAMES, layer_groups

    if not recipe or any(c.to_dict().get("type") not in _QUANTIZING for c in recipe):
        return False
    groups = {g for c in recipe
              for g in (("embedding",) if c.to_dict().get("type") == "embedding_quant"
                        else getattr(c, "groups", ()) or GROUP_NAMES)}
    names = [n for g, ns in layer_groups(before).items() if g in groups for n in ns]
    old_modules, modules = dict(before.named_modules()), dict(after.named_modules())
    if not names:
        return False
    with torch.no_grad():
        for name in names:
            old = _dense(old_modules[name].weight)
            new = _dense(getattr(modules[name], "weight", None)) if name in modules else None
            if old is None or new is None or old.shape != new.shape:
                return False
            # a real rounding moves weights by ~1e-3..1e-1 of their range; float noise of a
            # dequantization stays near 1e-7
            if float((new - old).abs().max()) > 1e-5 * max(float(old.abs().max()), 1e-12):
                return False
    return True


def measure(spec: ModelSpec, recipe: Sequence[TechniqueConfig], backend: str,
            samples: int = DEFAULT_SAMPLES) -> float:
    """The metric (1.0 = fp32) of ``spec``'s model compressed by ``recipe`` in ``backend``'s flavour."""
    key = _key(spec, recipe, backend, samples)
    if key not in _SCORES:
        compress_and_score(spec, recipe, backend, samples)
    return _SCORES[key]


def clear_cache() -> None:
    """Forget every cached measurement (tests, or after the model changed on disk)."""
    _SCORES.clear()
    _REFERENCES.clear()
    _UNCHANGED.clear()
