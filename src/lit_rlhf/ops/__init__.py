"""Tensor helpers every stage uses: masked reductions, log-probs, model forwards and generation.

Nothing here knows about RL, losses or regularizers; those rooms import from here, never the reverse.
"""
