"""Sampling responses from a policy with the KV cache, and masking everything after the stop token."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, PreTrainedModel

from lit_rlhf.ops.masking import response_mask


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled (HF generate semantics: top_k=0 and top_p=1.0 disable those filters).

    temperature=0 decodes greedily (the self-critical baseline's response).
    """

    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float


@dataclass(frozen=True)
class Generation:
    """Prompts and their sampled responses.

    Attributes:
        sequences: (B, P+R) left-padded prompt followed by the response.
        attention_mask: (B, P+R) real prompt tokens and response tokens up to the first stop token.
        response_ids: (B, R) the generated part (tokens after a stop token are padding).
        response_mask: (B, R) True up to and including the first stop token.
        has_stop: (B,) whether the response emitted a stop token before max_new_tokens.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_stop: torch.Tensor

    @property
    def prompt_length(self) -> int:
        return self.sequences.shape[1] - self.response_ids.shape[1]

    def select(self, rows: slice | torch.Tensor) -> Generation:
        """The generations in `rows`."""
        return Generation(*(getattr(self, field.name)[rows] for field in dataclasses.fields(self)))


def concatenate_generations(parts: Sequence[Generation], pad_token_id: int) -> Generation:
    """One Generation from chunks generated separately: responses right-padded to the longest chunk's.

    Every chunk must share the prompt block (the same left-padded prompt width), as chunks of one batch do.
    """
    if len({part.prompt_length for part in parts}) != 1:
        raise ValueError("generation chunks must share one prompt width; split the rows of one prompt batch")
    width = max(part.response_ids.shape[1] for part in parts)

    def padded(name: str, value) -> torch.Tensor:
        """Each chunk's tensor, its response part right-padded to `width`, stacked along rows."""
        return torch.cat(
            [
                torch.nn.functional.pad(getattr(part, name), (0, width - part.response_ids.shape[1]), value=value)
                for part in parts
            ]
        )

    return Generation(
        sequences=padded("sequences", pad_token_id),
        attention_mask=padded("attention_mask", 0),
        response_ids=padded("response_ids", pad_token_id),
        response_mask=padded("response_mask", False),
        has_stop=torch.cat([part.has_stop for part in parts]),
    )


@torch.no_grad()
def generate(
    policy: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    sampling: SamplingConfig,
    stop_token_ids: Sequence[int],
    pad_token_id: int,
    logits_processor: LogitsProcessorList | None = None,
) -> Generation:
    """Sample one response per prompt row (repeat rows beforehand for several per prompt).

    Args:
        logits_processor: extra processors for HF generate; they run before temperature, top-k and top-p
            (the rollout engine's log-prob recorder reads the raw logits there).
    """
    if sampling.temperature > 0:
        decoding = dict(do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    else:
        # Greedy: HF warns about sampling flags given without sampling, so none are passed.
        decoding = dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    sequences = policy.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        max_new_tokens=sampling.max_new_tokens,
        **decoding,
        eos_token_id=list(stop_token_ids),
        pad_token_id=pad_token_id,
        use_cache=True,
        logits_processor=logits_processor,
    )
    response_ids = sequences[:, prompt_ids.shape[1] :]
    mask, has_stop = response_mask(response_ids, stop_token_ids)
    return Generation(
        sequences=sequences,
        attention_mask=torch.cat([prompt_mask.bool(), mask], dim=1).long(),
        response_ids=response_ids,
        response_mask=mask,
        has_stop=has_stop,
    )


def decode_responses(tokenizer, generation: Generation) -> list[str]:
    """Response texts without the stop token or padding."""
    ids = generation.response_ids.masked_fill(~generation.response_mask, tokenizer.pad_token_id)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)
