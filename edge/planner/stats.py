"""What one inference of a model costs, counted per layer group on the host.

A forward pass over ``example_inputs`` with hooks on every weight-bearing leaf module
(Linear, Conv2d, Embedding) counts its weights, FLOPs and activation bytes; a
``FlopCounterMode`` pass counts everything else that multiplies (attention matmuls). The
same pass counts the ops a traced graph would hold (:class:`CallCounter`: tensor-returning
torch calls, each paying a dispatch) and sorts the ATen kernels they run into
(:class:`OpCounter`) *matmul* ops (``mm``, ``addmm``, ``bmm``, ``convolution`` ..., costed by
FLOPs), *view* ops (``view``, ``transpose`` ..., dispatch only) and *memory* ops, everything
else (elementwise, normalization, softmax, pooling, reductions), costed by the bytes they
read and write. Numbers are for batch 1 at the model's fixed input shapes.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..compress.groups import group_of

FP32_BYTES = 4
MATMUL_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution",
                        "_convolution", "conv2d", "conv1d", "embedding"})
VIEW_OPS = frozenset({"view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute",
                      "expand", "unsqueeze", "squeeze", "slice", "select", "alias", "detach",
                      "as_strided", "unbind", "split", "split_with_sizes", "chunk", "lift_fresh",
                      "_local_scalar_dense", "empty", "scalar_tensor", "arange", "zeros", "new_ones"})
# producers whose output an epilogue can be folded into, and the epilogues XNNPACK and TFLite fold
# (BatchNorm into the conv's weights, ReLU/ReLU6/clamp as the kernel's output range, a bias add)
EPILOGUE_PRODUCERS = frozenset({"mm", "addmm", "bmm", "linear", "convolution", "_convolution",
                                "conv2d", "conv1d"})
# memory ops that cost more per byte than a stream through the cache: transcendentals (exp, erf,
# tanh ... per element) and pooling windows; each class has its own calibrated rate
TRANSCENDENTAL_OPS = frozenset({"gelu", "silu", "sigmoid", "tanh", "exp", "erf", "log", "_softmax",
                                "softmax", "_log_softmax", "log_softmax", "rsqrt", "sqrt", "pow",
                                "hardswish", "mish", "elu", "softplus", "cos", "sin"})
POOL_OPS = frozenset({"max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "max_pool1d",
                      "avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
                      "adaptive_max_pool2d", "max_pool3d_with_indices"})
EPILOGUE_OPS = frozenset({"_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm",
                          "relu", "relu_", "hardtanh", "hardtanh_", "clamp", "clamp_min", "add"})


@dataclass
class GroupStats:
    """One layer group: ``weight_params`` stored, ``read_params`` read per inference (embeddings
    read only the rows they look up), ``rows`` output channels (one quantization scale each)."""

    weight_params: int = 0
    read_params: int = 0
    rows: int = 0
    flops: float = 0.0
    activation_bytes: float = 0.0  # fp32 inputs + outputs of its modules
    modules: int = 0
    min_in_features: int = 1 << 30  # smallest Linear input width (int4 group sizes must divide it)
    shared_params: int = 0  # of weight_params, those tied to an earlier group's (an LM head tied to its embedding)


@dataclass
class ModelStats:
    """Per-group stats plus what lies outside the groups (norms, biases, attention matmuls)."""

    groups: dict[str, GroupStats] = field(default_factory=dict)
    other_params: int = 0
    other_flops: float = 0.0
    peak_activation_bytes: float = 0.0
    ops: int = 0  # tensor-returning torch calls of one forward (the ops of a traced graph)
    matmul_ops: int = 0  # of which multiply (grouped modules' and attention matmuls)
    memory_ops: int = 0  # of which elementwise, norms, softmax, pooling, reductions
    memory_bytes: float = 0.0  # bytes read and written by the memory ops
    # of the memory ops, those applied straight to a matmul's or conv's output (BatchNorm, ReLU,
    # clamp, a bias add): a runtime that fuses epilogues folds them into the producing kernel
    epilogue_ops: int = 0
    epilogue_bytes: float = 0.0
    # of the memory ops, transcendentals and pooling (their own rates); the rest are streams
    transcendental_ops: int = 0
    transcendental_bytes: float = 0.0
    pool_ops: int = 0
    pool_bytes: float = 0.0

    @property
    def total_params(self) -> int:
        return self.other_params + sum(g.weight_params for g in self.groups.values())

    @property
    def total_flops(self) -> float:
        return self.other_flops + sum(g.flops for g in self.groups.values())

    def to_dict(self) -> dict:
        return {"total_params": self.total_params, "total_flops": self.total_flops,
                "other_params": self.other_params, "other_flops": self.other_flops,
                "peak_activation_bytes": self.peak_activation_bytes, "ops": self.ops,
                "matmul_ops": self.matmul_ops, "memory_ops": self.memory_ops,
                "memory_bytes": self.memory_bytes, "epilogue_ops": self.epilogue_ops,
                "epilogue_bytes": self.epilogue_bytes, "transcendental_ops": self.transcendental_ops,
                "transcendental_bytes": self.transcendental_bytes, "pool_ops": self.pool_ops,
                "pool_bytes": self.pool_bytes,
                "groups": {k: vars(v) for k, v in self.groups.items()}}


class CallCounter(TorchFunctionMode):
    """Counts the torch calls that return tensors (``F.linear``, ``x + y``, ``view`` ...): the
    ops a traced graph holds, before decomposition into ATen kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        self.ops += isinstance(first, torch.Tensor)
        return out


class OpCounter(TorchDispatchMode):
    """Counts the ATen kernels dispatched inside it by kind (matmul, view, memory), the bytes
    the memory ops read and write, and which memory ops are epilogues: an :data:`EPILOGUE_OPS`
    op whose input is a matmul's or conv's output (through views, or another epilogue)."""

    def __init__(self) -> None:
        super().__init__()
        self.matmul_ops = self.memory_ops = self.epilogue_ops = self.transcendental_ops = self.pool_ops = 0
        self.memory_bytes = self.epilogue_bytes = self.transcendental_bytes = self.pool_bytes = 0.0
        # id -> weak reference (a freed tensor's id may be reused: the reference must still be it)
        self._producers: dict[int, weakref.ref] = {}

    def _mark(self, out) -> None:
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor):
            self._producers[id(first)] = weakref.ref(first)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        first = args[0] if args else None
        ref = self._producers.get(id(first)) if isinstance(first, torch.Tensor) else None
        from_producer = ref is not None and ref() is first
        if name in MATMUL_OPS:
            self.matmul_ops += name != "embedding"
            if name in EPILOGUE_PRODUCERS:
                self._mark(out)
        elif name in VIEW_OPS:
            if from_producer:
                self._mark(out)
        else:
            moved = _tensor_bytes(args) + _tensor_bytes(kwargs or {}) + _tensor_bytes(out)
            self.memory_ops += 1
            self.memory_bytes += moved
            if from_producer and name in EPILOGUE_OPS and _epilogue_operands(name, args):
                self.epilogue_ops += 1
                self.epilogue_bytes += moved
                self._mark(out)
            elif name in TRANSCENDENTAL_OPS:
                self.transcendental_ops += 1
                self.transcendental_bytes += moved
            elif name in POOL_OPS:
                self.pool_ops += 1
                self.pool_bytes += moved
        return out


def _epilogue_operands(name: str, args: tuple) -> bool:
    """An ``add`` folds into its producer only as a bias (a scalar or a vector), not a residual."""
    if name != "add":
        return True
    other = args[1] if len(args) > 1 else None
    return not isinstance(other, torch.Tensor) or other.dim() <= 1


def _tensor_bytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_tensor_bytes(t) for t in x)
    if isinstance(x, dict):
        return sum(_tensor_bytes(t) for t in x.values())
    return 0


def _nbytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * FP32_BYTES
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(t) for t in x)
    return 0


def _module_flops(module: nn.Module, out: torch.Tensor) -> float:
    if isinstance(module, nn.Linear):
        return 2.0 * module.in_features * out.numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2.0 * out.numel() * (module.in_channels // module.groups) * kh * kw
    return 0.0


@torch.no_grad()
def count_stats(model: nn.Module, example_inputs: tuple) -> ModelStats:
    """Count weights, FLOPs and activation bytes of one inference, per layer group."""
    stats = ModelStats()
    grouped_params: set[int] = set()
    handles, peak = [], [0.0]

    def hook(name: str, group: str):
        def fn(module: nn.Module, inputs, out) -> None:
            g = stats.groups.setdefault(group, GroupStats())
            g.flops += _module_flops(module, out)
            g.activation_bytes += _nbytes(inputs) + _nbytes(out)
            if isinstance(module, nn.Embedding):
                g.read_params += out.numel()
            else:
                g.read_params += module.weight.numel()
            peak[0] = max(peak[0], _nbytes(inputs) + _nbytes(out))
        return fn

    for name, module in model.named_modules():
        group = group_of(name, module)
        if group is None:
            continue
        g = stats.groups.setdefault(group, GroupStats())
        if id(module.weight) in grouped_params:
            g.shared_params += module.weight.numel()
        g.weight_params += module.weight.numel()
        g.rows += module.weight.shape[0]
        g.modules += 1
        if isinstance(module, nn.Linear):
            g.min_in_features = min(g.min_in_features, module.in_features)
        grouped_params.add(id(module.weight))
        handles.append(module.register_forward_hook(hook(name, group)))
    try:
        counter, op_counter, calls = FlopCounterMode(display=False), OpCounter(), CallCounter()
        with counter, op_counter, calls:
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    stats.other_params = sum(p.numel() for p in model.parameters() if id(p) not in grouped_params)
    stats.other_flops = max(0.0, counter.get_total_flops() - sum(g.flops for g in stats.groups.values()))
    stats.ops, stats.matmul_ops = calls.ops, op_counter.matmul_ops
    stats.memory_ops, stats.memory_bytes = op_counter.memory_ops, op_counter.memory_bytes
    for kind in ("epilogue", "transcendental", "pool"):
        setattr(stats, f"{kind}_ops", getattr(op_counter, f"{kind}_ops"))
        setattr(stats, f"{kind}_bytes", getattr(op_counter, f"{kind}_bytes"))
    stats.peak_activation_bytes = 2.0 * peak[0]  # the live input + output pair, times 2 for arena slack
    return stats
