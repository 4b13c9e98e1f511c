from lit_rlhf.callbacks.checkpoint import ResumableCheckpoint
from lit_rlhf.callbacks.export import HFExport
from lit_rlhf.callbacks.finite_guard import NonFiniteGuard
from lit_rlhf.callbacks.pruning import OptunaPruning
from lit_rlhf.callbacks.stop_on_signal import StopOnSignal

__all__ = ["HFExport", "NonFiniteGuard", "OptunaPruning", "ResumableCheckpoint", "StopOnSignal"]
