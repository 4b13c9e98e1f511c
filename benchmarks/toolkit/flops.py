"""FLOP accounting for the benchmarks: the machine's matrix-product peak, and the model FLOPs and tokens of a run.

Model FLOPs follow the usual convention (Kaplan et al. 2020, "Scaling Laws for Neural Language Models"; the
attention term as in PaLM, Chowdhery et al. 2022), per sequence of s tokens through a decoder whose matrix
products hold N weights (every nn.Linear of the decoder, plus the head: the LM head's V·d for a causal LM,
tied or not, the score head's d for a reward model; the embedding lookup is no product):

    forward (reference, generation, no_grad):   2·N·s + 4·L·d_attn·s²
    forward + backward (a trained pass):        6·N·s + 12·L·d_attn·s²

(L layers, d_attn = heads × head_dim; attention counted over all s² pairs, not the causal half.) "Real"
counts each sequence at its own length (the attention mask's), "padded" at the batch's padded length:
padding waste = 1 − real / padded tokens. MFU = model FLOPs per second of real tokens / the peak of
`torch.matmul` or `F.linear`, whichever is faster, at the run's precision and thread count, measured by
`matmul_peak` in the same run.
Gradient checkpointing's recomputation is not counted (it is hardware work, not model work).

Counted by wrapping the decoder's forward (`LlamaModel.forward`, what every model of these benchmarks
runs, policy, reference and reward model alike), so both sides are counted by the same code.
"""

from __future__ import annotations

import time
from unittest import mock

import torch

FLOP_KEYS = ("tokens_real", "tokens_padded", "flops_real", "flops_padded")


def matmul_peak(threads: int, seconds: float = 0.2) -> dict[str, float]:
    """Best FLOP/s of square matrix products (n = 256, 512, 1024) per dtype, at `threads` torch threads.

    Two ops each: `torch.matmul` and `F.linear` (what nn.Linear runs): on this AVX2 CPU bf16 `torch.matmul` is
    ~8x slower than bf16 `F.linear`, so the peak is the faster of the two (both kept, as DTYPE_OP). About
    `seconds` per size, op and dtype, at least one timed product each.
    """
    torch.set_num_threads(threads)
    peak = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for op_name, op in (("matmul", torch.matmul), ("linear", torch.nn.functional.linear)):
            best = 0.0
            for n in (256, 512, 1024):
                a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
                op(a, b)  # warm-up
                started = time.perf_counter()
                while True:
                    tick = time.perf_counter()
                    op(a, b)
                    best = max(best, 2 * n**3 / (time.perf_counter() - tick))
                    if time.perf_counter() - started > seconds:
                        break
            peak[f"{name}_{op_name}"] = best
        peak[name] = max(peak[f"{name}_matmul"], peak[f"{name}_linear"])
    return peak


class FlopCounter:
    """Tokens and model FLOPs of every decoder forward since the last `take()`; see the module docstring.

    Args:
        head: "causal-lm" (an LM head of vocab × hidden follows the decoder) or "reward" (a scalar head).
    """

    def __init__(self, head: str):
        self.head, self.sizes, self.counts, self.dtypes = head, {}, dict.fromkeys(FLOP_KEYS, 0.0), set()

    def model_sizes(self, decoder) -> tuple[int, int]:
        """(N, L·d_attn) of a decoder, computed once per decoder."""
        if id(decoder) not in self.sizes:
            config = decoder.config
            linear = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))
            head = config.vocab_size if self.head == "causal-lm" else getattr(config, "num_labels", 1)
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            attention = config.num_hidden_layers * config.num_attention_heads * head_dim
            self.sizes[id(decoder)] = (linear + head * config.hidden_size, attention)
        return self.sizes[id(decoder)]

    def count(self, decoder, input_ids, attention_mask, inputs_embeds) -> None:
        """Add one forward: trained if autograd records it, else forward-only."""
        shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]  # (B, T)
        if attention_mask is not None and attention_mask.dim() == 2:
            lengths = attention_mask.sum(dim=1).double()  # (B,)
        else:
            lengths = torch.full((shape[0],), float(shape[1]), dtype=torch.float64)
        n, attention = self.model_sizes(decoder)
        k = 6 if torch.is_grad_enabled() else 2
        self.counts["tokens_real"] += float(lengths.sum())
        self.counts["tokens_padded"] += float(shape[0] * shape[1])
        self.counts["flops_real"] += k * n * float(lengths.sum()) + 2 * k * attention * float((lengths**2).sum())
        self.counts["flops_padded"] += k * n * shape[0] * shape[1] + 2 * k * attention * shape[0] * shape[1] ** 2
        self.dtypes.add(str(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else "float32")

    def take(self) -> dict[str, float]:
        """The counts since the last call (one step's, when called at every step's end)."""
        counts, self.counts = self.counts, dict.fromkeys(FLOP_KEYS, 0.0)
        return counts

    def patch(self):
        """A context manager under which every `LlamaModel.forward` is counted."""
        from transformers.models.llama.modeling_llama import LlamaModel

        forward, counter = LlamaModel.forward, self

        def counted(decoder, input_ids=None, attention_mask=None, *args, **kwargs):
            counter.count(decoder, input_ids, attention_mask, kwargs.get("inputs_embeds"))
            return forward(decoder, input_ids, attention_mask, *args, **kwargs)

        return mock.patch.object(LlamaModel, "forward", counted)


def flop_summary(per_step: dict[str, list[float]], warmup: int, seconds: float, peak: dict | None, dtype: str) -> dict:
    """FLOP/s, MFU and padding waste over the timed steps (those after `warmup`) that took `seconds`."""
    totals = {key: sum(per_step[key][warmup:]) for key in FLOP_KEYS}
    summary = dict(model_flops_per_second=totals["flops_real"] / seconds)
    summary |= dict(padded_flops_per_second=totals["flops_padded"] / seconds, compute_dtype=dtype)
    summary |= dict(padding_waste=1 - totals["tokens_real"] / totals["tokens_padded"], **totals)
    if peak:
        summary |= dict(mfu=summary["model_flops_per_second"] / peak[dtype], peak_flops_per_second=peak[dtype])
        summary |= dict(mfu_vs_float32_peak=summary["model_flops_per_second"] / peak["float32"])
    return summary
