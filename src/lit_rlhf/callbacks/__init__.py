from lit_rlhf.callbacks.checkpoint import ResumableCheckpoint
from lit_rlhf.callbacks.export import HFExport
from lit_rlhf.callbacks.pruning import OptunaPruning

__all__ = ["HFExport", "OptunaPruning", "ResumableCheckpoint"]
