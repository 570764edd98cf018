"""Target training (supervised fine-tuning of a whole Vid-LLM on its answers): how the embedded demo
target learns to describe synthetic videos. Every parameter trains, the vision tower included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from train import ivsb
from train.loss import masked_mean


def target_loss(target, batch):
    """Next-token cross-entropy on the assistant's tokens; metrics: loss and token accuracy."""
    positions = batch["positions"]
    if positions.ndim == 3:  # M-RoPE, stored batch-first
        positions = jnp.moveaxis(positions, 1, 0)
    out = target.decode(target.embed(batch["input_ids"], batch.get("video")), positions)
    logits = target.logits(out.hidden).astype(jnp.float32)
    labels = ivsb.shift_left(batch["input_ids"])
    mask = ivsb.shift_left(batch["assistant"], 1, False).astype(jnp.float32)  # token t + 1 is an answer token
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    accuracy = masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)
    loss = masked_mean(nll, mask)
    return loss, {"token_accuracy": accuracy, "scored_positions": jnp.sum(mask)}


def make_target_step(graphdef, optimizer, schedule):
    """step(state, unused, batch) -> (state, metrics): the same signature as the draft step."""

    def step(state, _, batch):
        def loss_fn(params):
            return target_loss(nnx.merge(graphdef, params), batch)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics.update(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state["step"]))
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}, metrics

    return step
