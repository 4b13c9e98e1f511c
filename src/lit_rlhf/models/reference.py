"""The frozen reference policy π_ref that PPO's KL and DPO's log-ratios are measured against.

Without adapters it is a frozen copy of the initial policy (optionally held in bfloat16 to
halve its memory). With LoRA it is the policy itself with its adapters switched off: the base
weights never train, so they *are* the initial policy, and no second model is held (as TRL
and verl do).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import cast

import torch
from peft import PeftModel
from torch import nn

from lit_rlhf.models.adapters import is_adapted
from lit_rlhf.models.loading import torch_dtype


class Reference(nn.Module):
    """π_ref, run through `with reference.model() as model: ...` (always under no_grad by its callers).

    Args:
        policy: the policy at the start of training.
        dtype: the frozen copy's dtype (float32, bfloat16, float16); an adapted policy's is its own.
    """

    def __init__(self, policy: nn.Module, dtype: str):
        super().__init__()
        if is_adapted(policy):
            # A tuple, so the policy is not registered twice (its parameters, its checkpoint entries).
            self._adapted_policy: tuple[PeftModel, ...] = (cast(PeftModel, policy),)  # is_adapted: a PeftModel
            self.copy = None
        else:
            self._adapted_policy = ()
            self.copy = copy.deepcopy(policy).to(torch_dtype(dtype)).eval().requires_grad_(False)

    @property
    def shares_policy(self) -> bool:
        """True when π_ref is the adapter-disabled policy rather than a copy."""
        return self.copy is None

    @contextlib.contextmanager
    def model(self) -> Iterator[nn.Module]:
        """The model that computes π_ref: the copy, or the policy with its adapters off for the block."""
        if self.copy is not None:
            yield self.copy
            return
        (policy,) = self._adapted_policy
        with policy.disable_adapter(), torch.no_grad():
            yield policy
