"""Data: records, sources that read files or the hub, tokenized tables, collated batches and datamodules.

A source yields records (`PromptRecord`, `SFTRecord`, `PreferenceRecord`, `RankedRecord`); a datamodule
tokenizes them once into cached Arrow tables and collates batches (`SFTBatch`, `PreferenceBatch`,
`PromptBatch`) for the stage modules. The `data` config group picks the datamodule and its source.
"""

from lit_rlhf.data.batches import PPOBatch, PreferenceBatch, PromptBatch, SFTBatch
from lit_rlhf.data.datamodules import PreferenceDataModule, PromptDataModule, RecordDataModule, SFTDataModule
from lit_rlhf.data.demonstrations import SFTFileSource, TextFileSource
from lit_rlhf.data.messages import ChatRenderer
from lit_rlhf.data.prompts import PromptFileSource
from lit_rlhf.data.records import PreferenceRecord, PromptRecord, RankedRecord, SFTRecord
from lit_rlhf.data.sources import HHRLHFSource, JsonlPreferenceSource

__all__ = [
    "ChatRenderer",
    "HHRLHFSource",
    "JsonlPreferenceSource",
    "PPOBatch",
    "PreferenceBatch",
    "PreferenceDataModule",
    "PreferenceRecord",
    "PromptBatch",
    "PromptDataModule",
    "PromptFileSource",
    "PromptRecord",
    "RankedRecord",
    "RecordDataModule",
    "SFTBatch",
    "SFTDataModule",
    "SFTFileSource",
    "SFTRecord",
    "TextFileSource",
]
