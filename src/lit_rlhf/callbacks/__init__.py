from lit_rlhf.callbacks.checkpoint import ResumableCheckpoint
from lit_rlhf.callbacks.export import HFExport

__all__ = ["HFExport", "ResumableCheckpoint"]
