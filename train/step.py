"""The jitted train step: the frozen target's features through the shared capture function, the draft's
IVSB + MTP passes, the loss, and the optax update. Pure: (state, target params, batch) -> (state, metrics)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from train import ivsb
from train.config import ObjectiveConfig, OptimConfig
from train.loss import pass_losses
from train.sharding import batch_sharding

# Rows longer than this recompute the draft's layers in the backward pass instead of keeping their
# intermediates (a 7B-shaped layer over 25.6k positions keeps ~8 GB for it); shorter rows gain nothing.
REMAT_FROM = 2048


def forward(target, batch, capture=(), pin=lambda x: x):
    """The target's full forward over a training batch (`decode`, the one capture function inference uses).
    `pin` places the embeddings (see `make_train_step`)."""
    positions = batch["positions"]
    if positions.ndim == 3:  # M-RoPE, stored batch-first
        positions = jnp.moveaxis(positions, 1, 0)
    return target.decode(pin(target.embed(batch["input_ids"], batch.get("video"))), positions, capture=capture)


def target_features(target, batch, capture_layer: int, pin=lambda x: x):
    """(final normed hidden [B,L,H], output of the first `capture_layer` layers [B,L,H]); the soft labels
    follow from the hidden states through the lm_head (`draft_loss`)."""
    out = forward(target, batch, (capture_layer,), pin)
    return pin(out.hidden), pin(out.captured[capture_layer])


def draft_states(target, batch, capture_layer: int):
    """What the draft needs from the target, in one [B,L,H] array: mid-layer states at visual positions,
    final normed states elsewhere (offline mode stores this; the logits follow from the lm_head)."""
    hidden, mid = target_features(target, batch, capture_layer)
    return jnp.where(batch["visual"][..., None], mid, hidden)


def stored_features(target, batch):
    """(hidden, mid) from stored `draft_states`: the same values online mode computes at every position
    the loss or the IVSB input reads."""
    states = batch["features"].astype(target.lm.dtype)
    return states, states


def draft_loss(draft, target, features, batch, key, obj: ObjectiveConfig):
    """Weighted sum over the 1 + mtp_passes passes; metrics per pass."""
    hidden, mid = jax.tree.map(jax.lax.stop_gradient, features)
    ids, visual, assistant = batch["input_ids"], batch["visual"], batch["assistant"]
    # Rows trained as the draft runs at inference (no visual states); `key` itself stays the noise's.
    text_only = (obj.attention == "text_only") | (
        jax.random.uniform(jax.random.fold_in(key, 1), ids.shape[:1]) < obj.text_only_fraction)
    nxt = ivsb.next_tokens(ids, visual, text_only)  # token t+1 at position t
    noisy = hidden + obj.noise * (jax.random.uniform(key, hidden.shape, hidden.dtype) - 0.5)
    lengths = batch["lengths"]
    if obj.text_len:  # every row text-only: drop the visual positions instead of masking them
        (nxt, noisy, hidden, mid, assistant), lengths = ivsb.text_rows(
            visual, lengths, obj.text_len, nxt, noisy, hidden, mid, assistant)
        visual = jnp.zeros(assistant.shape, bool)
    embeds = target.lm.embed_tokens(nxt)
    mask = ivsb.loss_mask(assistant)
    attn = ivsb.attention_mask(visual, lengths, text_only)
    positions = ivsb.draft_positions(visual, text_only)
    shiftable = ivsb.mtp_shiftable(assistant, visual)
    outs, h = [], noisy
    for _ in range(1 + obj.mtp_passes):
        x = draft.fuse(embeds, h)
        if obj.visual_input == "mid_layer":
            x = ivsb.ivsb_inputs(x, mid, visual)
        out, _ = draft.run_layers(x, positions, attn, remat=x.shape[1] > REMAT_FROM)
        outs.append(out)
        h = ivsb.mtp_hidden(noisy, jax.lax.stop_gradient(out) if obj.mtp_stop_gradient else out, shiftable)
    # Soft labels and draft logits through the lm_head in chunks of scored positions (no [B, L, V] array).
    per = pass_losses(jnp.stack(outs), hidden, mask, target.logits, draft_head=draft.head, vocab=draft.config.vocab)
    total, metrics = 0.0, {}
    for j in range(1 + obj.mtp_passes):
        loss = obj.feature_weight * per["feature"][j] + obj.ce_weight * per["ce"][j]
        total = total + obj.pass_decay**j * loss
        metrics.update({f"pass{j}/loss": loss, **{f"pass{j}/{k}": v[j] for k, v in per.items()}})
    metrics["scored_positions"] = jnp.sum(mask)
    return total, metrics


def make_optimizer(cfg: OptimConfig, steps: int):
    warm = optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1))
    rest = (optax.constant_schedule(cfg.lr) if cfg.schedule == "constant"
            else optax.cosine_decay_schedule(cfg.lr, max(steps - cfg.warmup_steps, 1)))
    schedule = optax.join_schedules([warm, rest], [cfg.warmup_steps])
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip),
                      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
    return opt, schedule


def make_train_step(target_graphdef, draft_graphdef, optimizer, schedule, obj: ObjectiveConfig, capture_layer: int,
                    mesh=None):
    """step(state, target_params, batch) -> (state, metrics); state = {params, opt_state, step, rng}.

    With `mesh`, the target's embeddings and states are pinned to the batch sharding: left to itself, XLA
    followed the fsdp-sharded weights, split the activations over the hidden dimension and ran the draft
    and its loss on every row on every device (a 7B step on fsdp 8: 39 GiB of temp per device, 16 pinned)."""

    def pin(x):
        return x if mesh is None else jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim))

    def step(state, target_params, batch):
        target = nnx.merge(target_graphdef, target_params)
        if "features" in batch:
            features = stored_features(target, batch)
        else:
            features = target_features(target, batch, capture_layer, pin)
        rng, key = jax.random.split(state["rng"])

        def loss_fn(params):
            return draft_loss(nnx.merge(draft_graphdef, params), target, features, batch, key, obj)

        return optimize(state, loss_fn, optimizer, schedule, rng)

    return step


def optimize(state, loss_fn, optimizer, schedule, rng):
    """One optax update of state["params"] on loss_fn(params) -> (loss, metrics); (new state, metrics)."""
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics.update(loss=loss, grad_norm=optax.tree.norm(grads), lr=schedule(state["step"]))
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": rng}, metrics
