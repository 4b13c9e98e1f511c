"""The KL(π ‖ π_ref) penalty: per-token estimators, coefficient controllers, and where the penalty acts.

`estimators` holds the formulas, `controllers` the coefficient β and its state, `penalty` the objects
a module is given (`regularizer/kl=in_reward|in_loss|none`), which own both.
"""
