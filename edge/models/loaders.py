"""Load a user's model: ``path/to/file.py:factory`` or a Hugging Face model directory."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .base import ModelSpec


def _as_inputs(value: object, where: str) -> tuple:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(t, torch.Tensor) for t in value):
        return tuple(value)
    raise ModelLoadError(
        f"{where}: expected example inputs as a tensor or a tuple of tensors, "
        f"found {type(value).__name__}; return (model, (tensor, ...)) from the factory"
    )


def _derived_inputs(example: tuple, n: int, seed: int) -> list[tuple]:
    """Deterministic inputs shaped like ``example``: Gaussian floats, ints in the example's range."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        batch = []
        for t in example:
            if t.dtype.is_floating_point:
                batch.append(torch.randn(t.shape, generator=gen).to(t.dtype))
            elif t.dtype == torch.bool:
                batch.append(torch.ones_like(t))
            else:
                hi = max(int(t.max().item()) + 1, 2)
                batch.append(torch.randint(0, hi, t.shape, generator=gen, dtype=t.dtype))
        out.append(tuple(batch))
    return out


def spec_from_factory_result(result: object, name: str, where: str) -> ModelSpec:
    """Turn what a user factory returned into a ModelSpec, or say what was wrong with it."""
    if isinstance(result, ModelSpec):
        return result
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise ModelLoadError(
            f"{where}: expected the factory to return (model, example_inputs) or an "
            f"edge.models.ModelSpec, found {type(result).__name__}"
        )
    model, example = result
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(
            f"{where}: expected the first item to be a torch.nn.Module, found {type(model).__name__}"
        )
    example = _as_inputs(example, where)
    model.eval()
    try:
        with torch.no_grad():
            out = model(*example)
    except Exception as exc:  # user code: any failure means the pair is inconsistent
        raise ModelLoadError(f"{where}: the model failed on its own example inputs: {exc}") from exc
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise ModelLoadError(f"{where}: expected the model to return tensors, found {type(out).__name__}")
    first = outs[0]
    metric = "top1" if first.dim() == 2 and first.shape[-1] > 1 and first.dtype.is_floating_point else "cosine"
    return ModelSpec(
        name=name,
        model=model,
        example_inputs=example,
        input_names=[f"input_{i}" for i in range(len(example))],
        output_names=[f"output_{i}" for i in range(len(outs))],
        calib_inputs=[example] + _derived_inputs(example, 31, seed=1),
        eval_inputs=_derived_inputs(example, 32, seed=2),
        metric=metric,
        description=f"user model from {where}",
        source=where,
    )


def load_factory(ref: str) -> ModelSpec:
    """Load ``file.py:factory``: import the file and call the factory with no arguments."""
    path_str, _, factory_name = ref.rpartition(":")
    path = Path(path_str).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"expected a Python file at {path}, found nothing; check the path in '{ref}'")
    mod_name = f"edge_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"expected an importable Python file at {path}; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:  # user code must not end edge (silently, with its own exit code)
        raise ModelLoadError(f"importing {path} called sys.exit({exc.code!r}); expected a module that "
                             "defines the factory; guard script code with `if __name__ == '__main__':`") from None
    except Exception as exc:  # user code
        raise ModelLoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelLoadError(
            f"expected a callable '{factory_name}' in {path}, found none; callables there: {found}"
        )
    try:
        result = factory()
    except SystemExit as exc:  # user code must not end edge
        raise ModelLoadError(f"{ref}: the factory called sys.exit({exc.code!r}); expected it to return "
                             "(model, example_inputs)") from None
    except Exception as exc:  # user code
        raise ModelLoadError(f"{ref}: the factory raised {type(exc).__name__}: {exc}") from exc
    return spec_from_factory_result(result, path.stem, ref)


def load_hf_dir(path: Path) -> ModelSpec:
    """A Hugging Face directory: a Llama-family decoder as a language model, else an encoder as a sentence embedder."""
    from .minilm import embedder_spec

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"expected a readable config.json in {path}: {exc}") from exc
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        from .lm import decoder_from_hf_dir

        return decoder_from_hf_dir(path, path.name)
    return embedder_spec(path.name, path, str(path), f"Hugging Face encoder from {path}")
