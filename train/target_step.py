"""Target training (supervised fine-tuning of a whole Vid-LLM on its answers): how the embedded demo
target learns to describe synthetic videos. Every parameter trains, the vision tower included."""

from __future__ import annotations

import jax.numpy as jnp
import optax
from flax import nnx

from train import ivsb
from train.loss import masked_mean
from train.step import forward, optimize


def target_loss(target, batch):
    """Next-token cross-entropy on the assistant's tokens; metrics: loss and token accuracy."""
    logits = target.logits(forward(target, batch).hidden).astype(jnp.float32)
    labels = ivsb.shift_left(batch["input_ids"])
    mask = ivsb.shift_left(batch["assistant"], 1, False).astype(jnp.float32)  # token t + 1 is an answer token
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    accuracy = masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)
    return masked_mean(nll, mask), {"token_accuracy": accuracy, "scored_positions": jnp.sum(mask)}


def make_target_step(graphdef, optimizer, schedule):
    """step(state, unused, batch) -> (state, metrics): the same signature as the draft step."""

    def step(state, _, batch):
        loss_fn = lambda params: target_loss(nnx.merge(graphdef, params), batch)  # noqa: E731
        return optimize(state, loss_fn, optimizer, schedule, state["rng"])

    return step
