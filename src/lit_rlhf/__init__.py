"""lit-rlhf: reward models, PPO and DPO as PyTorch Lightning modules composed with Hydra."""

__version__ = "0.1.0"
