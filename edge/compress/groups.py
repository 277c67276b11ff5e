"""Layer groups: the unit at which plans choose a recipe.

Every weight-bearing leaf module (``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``) falls
into exactly one group, named by its role:

- ``embedding``: token/position embedding tables
- ``attention``: query/key/value/output projections
- ``ffn``: feed-forward (MLP) projections of transformer blocks
- ``head``: the final classifier / LM head / pooler
- ``conv``: convolutions
- ``linear``: any other Linear (e.g. a plain MLP)
"""
from __future__ import annotations

from torch import nn

GROUP_NAMES = ("embedding", "attention", "ffn", "head", "conv", "linear")

_ATTENTION_KEYS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value")
_FFN_KEYS = ("ffn", "mlp", "intermediate", "gate_proj", "up_proj", "down_proj", "feed_forward")
_HEAD_KEYS = ("lm_head", "head", "classifier", "pooler")


def group_of(name: str, module: nn.Module) -> str | None:
    """The group of one leaf module, or None when it carries no compressible weight."""
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if not isinstance(module, nn.Linear):
        return None
    parts = name.lower().split(".")
    if any(k in p for p in parts for k in _ATTENTION_KEYS):
        return "attention"
    if any(k in p for p in parts for k in _FFN_KEYS) or name.endswith("output.dense"):
        return "ffn"
    if any(p.startswith(k) for p in parts for k in _HEAD_KEYS):
        return "head"
    return "linear"


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Group name -> fully qualified names of its modules (only non-empty groups, in model order)."""
    out: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        group = group_of(name, module)
        if group is not None:
            out.setdefault(group, []).append(name)
    return out


def selects(groups: tuple[str, ...], name: str, module: nn.Module) -> bool:
    """True when ``module`` belongs to one of ``groups`` (empty = every group)."""
    group = group_of(name, module)
    return group is not None and (not groups or group in groups)
