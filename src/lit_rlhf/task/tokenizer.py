"""A small byte-level BPE tokenizer, trained offline on the embedded task's text.

Byte-level (as in GPT-2: Radford et al., "Language Models are Unsupervised
Multitask Learners", 2019) so that any text, including real datasets such as
HH-RLHF, tokenizes without unknown tokens, while the task's own words become
one or two tokens each.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lit_rlhf.errors import ConfigError
from lit_rlhf.task.dataset import EmbeddedTask

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"  # distinct from EOS, so masking padding never masks a real EOS
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")

# Turns are separated by a newline *before* each role marker, never after the last
# message, and there is no end-of-turn token: the training pipeline appends EOS.
# So render(messages[:-1], add_generation_prompt=True) + messages[-1]["content"]
# equals render(messages), and prompt + response is exactly the full text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- if not loop.first %}{{ '\\n' }}{% endif -%}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if messages %}{{ '\\n' }}{% endif -%}"
    "{{ '<|assistant|>\\n' }}"
    "{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with `vocab_size` tokens in total.

    The vocabulary holds the 256 bytes, the EOS and pad tokens, the chat role
    markers (atomic, but not special: decoding with `skip_special_tokens` keeps
    them) and the learned merges. BOS is EOS, padding is on the right.
    """
    num_fixed = 256 + 2 + len(ROLE_TOKENS)
    if vocab_size < num_fixed:
        raise ConfigError(f"vocab_size must be >= {num_fixed} (bytes, specials, role markers), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(ROLE_TOKENS),  # the role markers are added after training
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ROLE_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )


def task_texts(task: EmbeddedTask) -> list[str]:
    """The training split's text: prompts, full demonstrations (prompt + response), corpus lines."""
    texts = [r.prompt for r in task.prompts("train")]
    texts += [r.prompt + r.response for r in task.demonstrations("train")]
    texts += task.pretraining_corpus("train")
    return texts


def build_task_tokenizer(task: EmbeddedTask, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """The tokenizer of the embedded task, trained on its training split only (deterministic)."""
    return train_tokenizer(task_texts(task), vocab_size=vocab_size)
