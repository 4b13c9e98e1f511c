"""Is everything finite? For gradients before an optimizer step, weights after it, and whatever is saved."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def tensors_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when no element of any tensor is NaN or inf.

    One fused norm first (NaN or inf in, NaN or inf out); only a non-finite norm, which a huge but
    finite tensor can also give, is checked element by element.
    """
    tensors = [t.detach() for t in tensors if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return True
    if torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type=2.0)):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def gradients_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """True when every gradient present is finite (parameters without a gradient are ignored)."""
    return tensors_finite(p.grad for p in parameters if p.grad is not None)


def nonfinite_names(tree, prefix: str = "") -> list[str]:
    """The names (dotted paths) of the floating tensors in nested dicts/lists that hold a NaN or inf."""
    if isinstance(tree, torch.Tensor):
        floating = tree.is_floating_point() or tree.is_complex()
        return [prefix or "tensor"] if floating and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [name for key, value in items for name in nonfinite_names(value, f"{prefix}.{key}" if prefix else str(key))]
