"""What only reinforcement learning needs: advantage estimators and the experience of a rollout."""
