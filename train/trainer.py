"""The training loop: the draft's initial state, sharded state, jitted steps, checkpoints, logs, export (the
target and the data are prepared by `train.prepare`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from sparrow_jax import checkpoint
from sparrow_jax.config import DraftConfig
from sparrow_jax.models import build_model
from train import checkpointing, data, sharding
from train.config import TrainConfig, to_dict
from train.features import check_meta
from train.log import Logger
from train.prepare import capture_layer, load_target, prepare_data
from train.step import make_optimizer, make_train_step
from train.target_step import make_target_step
from train.vocab import frequent_tokens
from train.tokenizer import load as load_tokenizer

VOCAB_FILE = "draft_vocab.json"  # a run's reduced draft vocabulary (`run_vocabulary`)


def draft_config(cfg: TrainConfig, target, vocab: tuple[int, ...] | None = None) -> DraftConfig:
    """The draft's layers: the target's shape (hidden size and vocabulary are shared) unless overridden;
    `vocab`: its reduced vocabulary (`train.vocab`), None for every token."""
    lm, d = target.lm.config, cfg.draft
    layers = dataclasses.replace(
        lm, num_layers=d.num_layers, intermediate_size=d.intermediate_size or lm.intermediate_size,
        num_heads=d.num_heads or lm.num_heads, num_kv_heads=d.num_kv_heads or lm.num_kv_heads,
        head_dim=d.head_dim or lm.head_dim, mrope_section=None, tie_word_embeddings=False,
        model_type="llama" if lm.model_type == "llama" else "qwen2",  # plain 1-D RoPE over text positions
    )
    return DraftConfig(layers, window=d.window, pinned=d.pinned, vocab=vocab)


def run_vocabulary(cfg: TrainConfig, records, tok, vocab_size: int) -> tuple[int, ...]:
    """The run's reduced draft vocabulary: chosen from `records` on its first start and kept in the workdir
    (`draft_vocab.json`), so a resumed run trains the same head rows even if the manifest changed since."""
    path = Path(cfg.workdir) / VOCAB_FILE
    if path.is_file():
        vocab = tuple(json.loads(path.read_text()))
        if len(vocab) != cfg.draft.vocab_size:
            raise ValueError(f"{path} holds {len(vocab)} tokens but draft.vocab_size={cfg.draft.vocab_size}: this "
                             "workdir's run chose its vocabulary already; set it back, or use a new workdir")
        return vocab
    vocab = frequent_tokens(records, tok, cfg.draft.vocab_size, vocab_size, cfg.data.system_prompt)
    if jax.process_index() == 0:  # every process chose the same (deterministic); one writes
        path.parent.mkdir(parents=True, exist_ok=True)
        data.write_atomic(path, json.dumps(list(vocab)))
    return vocab


def init_draft(cfg: TrainConfig, target, vocab: tuple[int, ...] | None = None):
    """The draft training starts from: `draft.init_from` (grown to `draft.num_layers`), or a random one whose
    head over `vocab` (if given) starts as the target's lm_head rows of those tokens."""
    if cfg.draft.init_from:
        draft = checkpoint.load(cfg.draft.init_from, "float32", on_host=True)
        if draft.config.layers.hidden_size != target.lm.config.hidden_size:
            raise ValueError(f"draft.init_from {cfg.draft.init_from} was built for another target")
        have, want = draft.config.layers.num_layers, cfg.draft.num_layers
        if want < have:
            raise ValueError(f"draft.num_layers={want} but draft.init_from {cfg.draft.init_from} has {have} layers: "
                             f"set draft.num_layers={have}, or more to add layers")
        if cfg.draft.vocab_size and len(draft.config.vocab or ()) != cfg.draft.vocab_size:
            scores = len(draft.config.vocab or ()) or "every"
            raise ValueError(f"draft.vocab_size={cfg.draft.vocab_size} but draft.init_from {cfg.draft.init_from} "
                             f"scores {scores} tokens: set draft.vocab_size=0 to keep its vocabulary, or train a new "
                             "draft")
        return grow_draft(draft, want, cfg.draft.seed) if want > have else draft
    draft = build_model(draft_config(cfg, target, vocab), rngs=nnx.Rngs(cfg.draft.seed))
    if vocab is not None:  # [H, K]: the target's lm_head columns (or tied embedding rows) of the vocabulary
        head = np.asarray(target.lm.head_kernel())[:, np.asarray(vocab)]
        draft.head.kernel[...] = head.astype(draft.head.kernel.dtype)
    return draft


def grow_draft(draft, num_layers: int, seed: int = 0):
    """`draft` with decoder layers added after its own up to `num_layers`. The new layers start with zero
    output projections (o_proj, down_proj), so they add nothing to the residual stream: the grown draft
    computes exactly what `draft` does until training moves them."""
    cfg = draft.config
    cfg = dataclasses.replace(cfg, layers=dataclasses.replace(cfg.layers, num_layers=num_layers))
    grown = build_model(cfg, rngs=nnx.Rngs(seed))
    old, new = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (draft, grown))
    rest, n_kept = new.pop("rest"), draft.config.layers.num_layers - 1
    if n_kept:  # the draft's own layers after the first (stacked) come first
        rest = jax.tree.map(lambda n, o: n.at[:n_kept].set(o), rest, old.pop("rest"))
    for block in (rest["self_attn"]["o_proj"], rest["mlp"]["down_proj"]):
        for name in block:  # kernel, and bias where the config has one
            block[name] = block[name].at[n_kept:].set(0)
    return checkpoint.assign(grown, {**new, **old, "rest": rest})


@dataclasses.dataclass
class Trained:
    state: dict  # params, opt_state, step, rng (global arrays)
    history: list  # logged metric rows
    draft_config: DraftConfig
    export: str


def initial_state(cfg: TrainConfig, draft, mesh):
    """(draft graphdef, state, its shardings, optimizer, lr schedule); state = {params, opt_state, step, rng},
    parameters and optimizer moments sharded by the logical-axis table, the rest replicated."""
    dgraph, dparams = nnx.split(draft)
    dparams = nnx.to_pure_dict(dparams)
    opt, schedule = make_optimizer(cfg.optim, cfg.steps)
    shardings = state_shardings(draft, opt, mesh)
    dparams = sharding.put_global(dparams, shardings["params"])
    rep = shardings["step"]
    state = {
        "params": dparams,
        "opt_state": jax.jit(opt.init, out_shardings=shardings["opt_state"])(dparams),
        "step": jax.device_put(jnp.int32(0), rep),
        "rng": jax.device_put(jax.random.PRNGKey(cfg.seed), rep),
    }
    return dgraph, state, shardings, opt, schedule


def state_shardings(draft, opt, mesh) -> dict:
    """Shardings of the training state of `draft` (an nnx module, possibly abstract): parameters and
    optimizer moments by the logical-axis table, the rest replicated."""
    d_sh = sharding.param_shardings(draft, mesh)
    rep = sharding.replicated(mesh)
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          nnx.to_pure_dict(nnx.state(draft, nnx.Param)))
    opt_sh = optax.tree_map_params(opt, lambda _, s: s, jax.eval_shape(opt.init, params), d_sh,
                                   transform_non_params=lambda _: rep)
    return {"params": d_sh, "opt_state": opt_sh, "step": rep, "rng": rep}


def run(cfg: TrainConfig, mesh=None) -> Trained:
    mesh = mesh if mesh is not None else sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    target = load_target(cfg.target)
    tok = load_tokenizer(cfg.data.tokenizer, cfg.data.video_placeholder)
    if tok.vocab_size > target.lm.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens, the target only {target.lm.config.vocab_size}")
    records = data.read_manifest(prepare_data(cfg, target, tok))
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.batch_size % shards or cfg.data.batch_size % jax.process_count():
        raise ValueError(f"data.batch_size {cfg.data.batch_size} must be a multiple of data x fsdp = {shards} "
                         f"and of the process count {jax.process_count()}")
    local_batch = cfg.data.batch_size // jax.process_count()
    features_dir = cfg.data.features_dir or None
    if features_dir:
        check_meta(cfg, target, len(records))
    data_iter = iter(data.loader(records, tok, target.config, cfg.data, local_batch, cfg.data.seed, features_dir))

    if cfg.mode == "target":  # the target itself trains (the embedded demo's target): no frozen copy
        draft, tparams = target, None
    else:
        vocab = None
        if cfg.draft.vocab_size and not cfg.draft.init_from:
            vocab = run_vocabulary(cfg, records, tok, target.lm.config.vocab_size)
        draft = init_draft(cfg, target, vocab)
        tgraph, tparams = nnx.split(target)
        tparams = sharding.put_global(nnx.to_pure_dict(tparams), sharding.param_shardings(target, mesh))
    dgraph, state, state_sh, opt, schedule = initial_state(cfg, draft, mesh)
    workdir = Path(cfg.workdir)
    mngr = checkpointing.manager(workdir / "checkpoints", cfg.checkpoint)
    restored, start = checkpointing.restore_latest(mngr, checkpointing.abstract(state), data_iter)
    if restored is not None:
        state = restored
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))

    if cfg.mode == "target":
        train_step = make_target_step(dgraph, opt, schedule)
    else:
        train_step = make_train_step(tgraph, dgraph, opt, schedule, cfg.objective, capture_layer(cfg, target), mesh)
    step_fn = jax.jit(train_step, out_shardings=(state_sh, None), donate_argnums=0)
    logger = Logger(workdir, cfg.log, cfg.steps, start)
    try:
        for s in range(start, cfg.steps):
            host = next(data_iter)
            state, metrics = step_fn(state, tparams, sharding.put_batch(host, mesh, target.config))
            tokens = int(host["lengths"].sum()) * jax.process_count()
            logger.step(s + 1, metrics, tokens, force=s + 1 == cfg.steps or s == start)
            checkpointing.save(mngr, s + 1, state, data_iter, force=s + 1 == cfg.steps)
        mngr.wait_until_finished()
    finally:
        logger.close()
        mngr.close()
    # Gathered to host arrays first: the exported draft loads on any topology (one device, another mesh).
    params = jax.device_get(multihost_utils.process_allgather(state["params"], tiled=True))
    # A trained target carries its tokenizer, like a converted checkpoint (python -m infer reads it).
    tokenizer = cfg.data.tokenizer if cfg.mode == "target" and Path(cfg.data.tokenizer).is_dir() else None
    checkpoint.save(cfg.export, draft.config, params, cfg.target.dtype, overwrite=True, tokenizer=tokenizer)
    return Trained(state, logger.history, draft.config, cfg.export)
