"""Shared cases of the packing tests: random small HF models and ragged preference batches."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config, LlamaConfig

from lit_rlhf.data.batches import PreferenceBatch

VOCAB = 61
PAD = 0


def random_model(kind: str, attention: str, scalar_head: bool = False):
    """A randomly initialised 2-layer Llama (grouped-query attention) or GPT-2, in eval mode (no dropout)."""
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=PAD,
            tie_word_embeddings=True,
        )
    else:
        config = GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            pad_token_id=PAD,
            bos_token_id=1,
            eos_token_id=1,
        )
    config._attn_implementation = attention
    auto = AutoModelForSequenceClassification if scalar_head else AutoModelForCausalLM
    if scalar_head:
        config.num_labels = 1
    return auto.from_config(config).eval()


def ragged_batch(groups: list[tuple[int, list[int]]], seed: int = 0) -> PreferenceBatch:
    """Right-padded completions, group after group (best first), from (prompt length, response lengths) per group.

    Every group yields its adjacent pairs (0, 1), (1, 2), ...: a group of 3 is a ranking.
    """
    generator = torch.Generator().manual_seed(seed)
    sequences, prompt_lengths, better, worse = [], [], [], []
    for prompt_length, response_lengths in groups:
        prompt = torch.randint(1, VOCAB, (prompt_length,), generator=generator).tolist()
        first = len(sequences)
        for length in response_lengths:
            sequences.append(prompt + torch.randint(1, VOCAB, (length,), generator=generator).tolist())
            prompt_lengths.append(prompt_length)
        better += list(range(first, len(sequences) - 1))
        worse += list(range(first + 1, len(sequences)))
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    response_mask = torch.zeros((len(sequences), width - 1), dtype=torch.bool)
    for n, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        ids[n, : len(sequence)] = torch.tensor(sequence)
        mask[n, : len(sequence)] = 1
        response_mask[n, prompt_length - 1 : len(sequence) - 1] = True
    return PreferenceBatch(
        input_ids=ids,
        attention_mask=mask,
        response_mask=response_mask,
        better_idx=torch.tensor(better),
        worse_idx=torch.tensor(worse),
        margin=torch.full((len(better),), float("nan")),
        sequence_ids=torch.arange(len(sequences)),
        prompts=[""] * len(sequences),
        responses=[""] * len(sequences),
        prompt_input_ids=ids[:, :1],
        prompt_attention_mask=mask[:, :1],
        group_prompts=[""] * len(groups),
    )


# Ragged prompts and responses: a pair with a 1-token response, a ranking of 3, a long prompt, a short one.
GROUPS = [(5, [4, 7]), (9, [1, 3, 2]), (17, [6, 5]), (2, [8, 1])]
