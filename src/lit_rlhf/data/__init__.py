"""Data: records, sources that read files or the hub, tokenized tables, collated batches and datamodules.

A source yields records (`PromptRecord`, `SFTRecord`, `PreferenceRecord`, `RankedRecord`); a datamodule
tokenizes them once into cached Arrow tables and collates batches (`SFTBatch`, `PreferenceBatch`,
`PromptBatch`) for the stage modules. The `data` config group picks the datamodule and its source.

One module per kind of data, each with its sources and its datamodule: `preferences`, `prompts`,
`demonstrations` (SFT) and `pretraining` (PPO-ptx's texts); `record_datamodule` is what the datamodules
share, `files` finds and reads a data path (file, folder or Hub dataset) into rows.
"""

from lit_rlhf.data.batches import PPOBatch, PreferenceBatch, PromptBatch, SFTBatch
from lit_rlhf.data.demonstrations import SFTDataModule, SFTFileSource
from lit_rlhf.data.messages import ChatRenderer
from lit_rlhf.data.preferences import HHRLHFSource, JsonlPreferenceSource, PreferenceDataModule
from lit_rlhf.data.pretraining import TextFileSource
from lit_rlhf.data.prompts import PromptDataModule, PromptFileSource
from lit_rlhf.data.record_datamodule import RecordDataModule
from lit_rlhf.data.records import PreferenceRecord, PromptRecord, RankedRecord, SFTRecord

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
