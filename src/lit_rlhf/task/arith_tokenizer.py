"""A character-level tokenizer for the arithmetic task: one token per digit, operator, "=" and space.

Digits as single tokens make column arithmetic learnable by a tiny model (BPE
merges such as "37" would hide the digits from it: Nogueira et al., "Investigating
the Limitations of Transformers with Simple Arithmetic Tasks", 2021). The
vocabulary is fixed, not trained, so the tokenizer is the same in every process.
Other characters become `<|unk|>` rather than disappearing.

Encoding a text with special tokens prepends `<|bos|>` (prompts are encoded so,
responses without), giving every sequence the same first token to attend to.
"""

from __future__ import annotations

import functools

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"  # distinct from EOS, so masking padding never masks a real EOS
UNK_TOKEN = "<|unk|>"
BOS_TOKEN = "<|bos|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, BOS_TOKEN)
CHARACTERS: tuple[str, ...] = tuple("0123456789+-= ")


@functools.lru_cache(maxsize=1)
def build_arith_tokenizer() -> PreTrainedTokenizerFast:
    """The task's tokenizer (cached: a config may ask for it twice, and it never changes).

    18 tokens: EOS (id 0), pad, unk, BOS, the ten digits, "+", "-", "=" and space. Padding on the right.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character
    tokenizer.decoder = decoders.Fuse()  # concatenate, with no space between tokens
    bos = (BOS_TOKEN, vocab[BOS_TOKEN])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[bos]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
    )
