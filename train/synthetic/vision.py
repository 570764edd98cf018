"""Vision pretraining for the demo target: before the whole model learns to describe videos, its vision
tower and projector learn to tell which objects a frame shows. This is the part a pretrained SigLIP plays
for a real LLaVA-OneVision; trained from scratch together with the language model, the tower is reached
only through answer tokens and the model settles on the language prior first (the first shipped pair's
target stated 1.8% of the facts after 500 steps).

The task: for each pooled token of a rendered frame of a random scene (the language model's input), which
(colour, shape, size) objects cover part of its cell: 80 sigmoid classes read out by one linear layer, so
each token learns to carry what it shows. The readout is thrown away; the target with its pretrained
tower is saved.

    python -m train.synthetic.vision --config train/configs/demo_target.json --out runs/demo/target_vision
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import trange

from sparrow_jax import checkpoint
from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.synthetic.world import (COLOURS, SHAPES, SIZES, frame_steps, pixel_centres, render, sample_scene,
                                     shape_mask)

CLASSES = [(c, s, z) for c in COLOURS for s in SHAPES for z in SIZES]
CLASS_INDEX = {k: i for i, k in enumerate(CLASSES)}
TRAINED = ("vision_tower", "multi_modal_projector")


def frames_and_labels(rng: np.random.Generator, scenes: int, frames: int, size: int, grid: int):
    """uint8 frames [scenes * frames, size, size, 3] of fresh random scenes, and labels [N, grid * grid, 80]:
    for each cell of the pooled token grid, the objects that cover part of it."""
    images, labels = [], np.zeros((scenes * frames, grid * grid, len(CLASSES)), np.float32)
    ys, xs = pixel_centres(size, size)
    cell = -(-size // grid)
    for n in range(scenes):
        scene = sample_scene(rng)
        images.append(render(scene, frames, size, size))
        for f, step in enumerate(frame_steps(scene, frames)):
            for i, t in enumerate(scene.things):
                if scene.visible(i, step):
                    cx, cy = scene.centres[step, i]
                    mask = np.pad(shape_mask(t.shape, xs - cx, ys - cy, SIZES[t.size]),
                                  [(0, cell * grid - size)] * 2)
                    covered = mask.reshape(grid, cell, grid, cell).any(axis=(1, 3)).reshape(-1)
                    labels[n * frames + f, covered, CLASS_INDEX[(scene.colour_at(i, step), t.shape, t.size)]] = 1
    return np.concatenate(images), labels


def token_logits(target, readout, pixels):
    """[N, S, S, 3] preprocessed frames -> [N, tokens per frame, 80] class logits of each pooled token."""
    feats = target.video_features(pixels[None])[0, :-1]  # drop the newline token
    return feats.reshape(pixels.shape[0], -1, feats.shape[-1]) @ readout["w"] + readout["b"]


def pretrain(target, steps: int, scenes: int = 16, frames: int = 4, lr: float = 2e-3, seed: int = 0,
             log_every: int = 100):
    """Train `target`'s vision tower and projector in place. Returns, on 64 unseen scenes: `loss` (per token
    and class), `prior_loss` (the best constant guess: each class's frequency there), `accuracy` (frames
    whose set of objects comes out exactly right), and `history`, the logged (step, training loss)."""
    from sparrow_jax.processing.llava_onevision import preprocess_video

    if not hasattr(target, "multi_modal_projector"):
        raise ValueError("vision pretraining supports the LLaVA-OneVision demo target")
    size, grid = target.config.vision.image_size, target.config.pooled_grid
    graph, state = nnx.split(target)
    params = nnx.to_pure_dict(state)
    frozen = {k: v for k, v in params.items() if k not in TRAINED}
    hidden = target.lm.config.hidden_size
    key = jax.random.PRNGKey(seed)
    trainable = {"model": {k: params[k] for k in TRAINED},
                 "readout": {"w": jax.random.normal(key, (hidden, len(CLASSES))) * hidden**-0.5,
                             "b": jnp.full((len(CLASSES),), -3.0)}}  # most classes are absent from a frame
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10 + 1), steps)
    opt = optax.adamw(schedule, weight_decay=0.01)
    opt_state = opt.init(trainable)

    def logits_of(p, pixels):
        return token_logits(nnx.merge(graph, {**frozen, **p["model"]}), p["readout"], pixels)

    def loss_fn(p, pixels, labels):
        return optax.sigmoid_binary_cross_entropy(logits_of(p, pixels), labels).mean()

    @jax.jit
    def step(p, opt_state, pixels, labels):
        loss, grads = jax.value_and_grad(loss_fn)(p, pixels, labels)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    history = []
    for s in (bar := trange(steps, desc="vision pretraining", unit="step")):
        images, labels = frames_and_labels(rng, scenes, frames, size, grid)
        trainable, opt_state, loss = step(trainable, opt_state, jnp.asarray(preprocess_video(images, size)), labels)
        if (s + 1) % log_every == 0 or s + 1 == steps:
            history.append((s + 1, float(loss)))
            bar.set_postfix(loss=f"{float(loss):.4f}")
    images, labels = frames_and_labels(np.random.default_rng(seed + 1), 64, frames, size, grid)  # unseen scenes
    pixels = jnp.asarray(preprocess_video(images, size))
    predicted = np.asarray(jax.jit(logits_of)(trainable, pixels) > 0)
    freq = np.clip(labels.mean(axis=(0, 1)), 1e-6, 1 - 1e-6)
    result = {"loss": float(jax.jit(loss_fn)(trainable, pixels, labels)),
              "prior_loss": float(-np.mean(labels * np.log(freq) + (1 - labels) * np.log(1 - freq))),
              "accuracy": float(np.mean(np.all(predicted.any(1) == (labels > 0).any(1), axis=1))),
              "history": history}
    checkpoint.assign(target, {**frozen, **trainable["model"]})
    return result


def main(argv=None) -> int:
    from sparrow_jax.errors import add_debug_flag, run_cli

    p = ArgumentParser(prog="python -m train.synthetic.vision", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="the target-training config (its target.random_init)")
    p.add_argument("--out", required=True, help="where the target with its pretrained tower is saved")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    p.add_argument("--scenes", type=int, default=16, help="scenes per step")
    p.add_argument("--frames", type=int, default=4, help="frames rendered per scene")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (warmup, then cosine decay)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)


def _run(args) -> int:
    from train import config
    from train.stand_ins import random_model, save_model

    cfg = config.load(args.config, []).target
    if cfg.random_init is None:
        raise ValueError(f"{args.config}: target.random_init is needed (the target starts from random weights)")
    target = random_model(cfg.random_init, cfg.random_seed, cfg.random_scale)
    start = time.time()
    r = pretrain(target, args.steps, args.scenes, args.frames, args.lr, cfg.random_seed)
    save_model(args.out, target, cfg.dtype)
    print(f"vision pretraining: {args.steps} steps in {time.time() - start:.0f} s; on unseen scenes: loss "
          f"{r['loss']:.4f} (best constant guess {r['prior_loss']:.4f}), frames with every object right "
          f"{r['accuracy']:.3f}; saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
