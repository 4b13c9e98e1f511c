"""Rollout engines: what samples the responses a stage learns from (the `generation` config group).

`hf` runs HF `generate` on the policy (`lit_rlhf.ops.generation`); `vllm` a colocated vLLM engine holding a
copy of the policy's weights. Both return a `Rollout`: the sampled tokens and the engine's log-probs of them.
This room sits above `ops` and below the stage modules; `vllm` is imported only when a VLLMEngine is built.
"""

from lit_rlhf.generation.hf_engine import HFEngine
from lit_rlhf.generation.rollout import GenerationEngine, Rollout, concatenate_rollouts
from lit_rlhf.generation.vllm_engine import VLLMEngine
from lit_rlhf.generation.weights import checkpoint_weights

__all__ = ["GenerationEngine", "HFEngine", "Rollout", "VLLMEngine", "checkpoint_weights", "concatenate_rollouts"]
