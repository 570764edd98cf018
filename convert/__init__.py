"""Checkpoint conversion between Hugging Face PyTorch weights and sparrow-jax."""
