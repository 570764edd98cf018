"""End-to-end training on the tiny CPU config: the loss falls and the trained draft accepts more in
`infer.generate`; resuming equals a straight run; 8 virtual devices (data x fsdp) match one device;
two `jax.distributed` processes train (on mixed video lengths); the trained draft exports through `convert export`."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import infer
import sparrow_jax
from sparrow_jax.models import build_model
from sparrow_jax.generation.speculative.tree import TreeShape
from train import checkpointing, config, data
from train.regeneration import prompt_of
from train.step import draft_loss, target_features
from train.tokenizer import ByteChatTokenizer
from train.trainer import run
from helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "train" / "configs" / "tiny.json"
QUIET = ["log.progress=false", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny config trained for 120 steps (its random target and regenerated data are reused below)."""
    wd = tmp_path_factory.mktemp("tiny")
    cfg = config.load(TINY, [f"workdir={wd}", "steps=120", "data.synthetic_examples=32", *QUIET])
    return cfg, run(cfg)


def short_run(wd, tiny_cfg, *extra):
    """Overrides for a few steps on the fixture's target and regenerated data (no regeneration)."""
    return [f"workdir={wd}", f"target.path={tiny_cfg.target.path}", f"data.manifest={tiny_cfg.regenerate.output}",
            "regenerate.enabled=false", "optim.schedule=constant", "optim.warmup_steps=2", "log.every=1", *QUIET,
            *extra]


def test_loss_falls_and_logs_are_written(tiny):
    cfg, result = tiny
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert last["pass0/top1"] > first["pass0/top1"] + 0.2 and "pass1/top1" in last
    rows = [json.loads(line) for line in (Path(cfg.workdir) / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 120 and rows[-1]["tokens_per_s"] > 0 and rows[-1]["step_time_s"] > 0


def test_trained_draft_accepts_more_in_generate(tiny):
    cfg, _ = tiny
    target, draft = sparrow_jax.load(cfg.target.path), sparrow_jax.load(cfg.export)
    untrained = build_model(draft.config, rngs=nnx.Rngs(cfg.draft.seed))  # the run's starting point
    tok = ByteChatTokenizer()
    prompts = [prompt_of(r, tok, target.config, cfg.data) for r in data.read_manifest(cfg.regenerate.output)[:8]]
    ids, videos = [p for p, _ in prompts], [v for _, v in prompts]
    tau, greedy = {}, infer.generate(target, ids, videos, max_new_tokens=40).token_ids()
    for name, d in (("untrained", untrained), ("trained", draft)):
        out = infer.generate(target, ids, videos, max_new_tokens=40, draft=d, tree=TreeShape.chain(4))
        assert out.token_ids() == greedy  # still lossless
        tau[name] = out.stats["tau"]
    print("tau", tau)
    assert tau["untrained"] < 1.2 and tau["trained"] > tau["untrained"] + 0.4


def test_trained_draft_exports(tiny, tmp_path):
    from convert.__main__ import main

    cfg, _ = tiny
    assert main(["export", "--src", cfg.export, "--dst", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()


def test_text_only_rows_train_as_the_draft_runs_at_inference(tiny):
    """objective.text_only_fraction draws rows trained text-only (VATA) among IVSB rows: at 1.0 every row
    is, and the loss is attention="text_only"'s; at 0.0 it is plain IVSB's. objective.text_len packs
    text-only rows to their text."""
    cfg, _ = tiny
    target, draft = sparrow_jax.load(cfg.target.path), sparrow_jax.load(cfg.export)
    tok = ByteChatTokenizer()
    recs = data.read_manifest(cfg.regenerate.output)[:4]
    batch = data.collate([data.encode(r, tok, target.config, cfg.data.seq_len, cfg.data.num_frames) for r in recs],
                         target.config, cfg.data.seq_len, tok.pad_id)
    batch = {k: jnp.asarray(v) for k, v in batch.items() if v is not None}
    feats = target_features(target, batch, target.lm.config.num_layers // 2)

    # Jitted (one compile per objective), since op-by-op on this tiny model took 4x longer; equal losses are
    # then equal to float32 rounding, programs differing.
    jitted = nnx.jit(lambda d, t, f, b, obj: draft_loss(d, t, f, b, jax.random.key(0), obj)[0], static_argnums=4)

    def loss(**kw):
        return float(jitted(draft, target, feats, batch, dataclasses.replace(cfg.objective, **kw)))

    ivsb_loss, text_loss = loss(attention="ivsb"), loss(attention="text_only")
    assert abs(ivsb_loss - text_loss) > 1e-4
    assert loss(attention="ivsb", text_only_fraction=1.0) == pytest.approx(text_loss, rel=1e-6)
    assert loss(attention="ivsb", text_only_fraction=0.0) == pytest.approx(ivsb_loss, rel=1e-6)
    half = loss(attention="ivsb", text_only_fraction=0.5)  # key 0 draws both kinds
    assert min(abs(half - ivsb_loss), abs(half - text_loss)) > 1e-4
    # objective.text_len drops the visual positions instead of masking them: the same loss (same noise draws),
    # and a row cut shorter than its text trains on less of it.
    text = int(jnp.max(batch["lengths"] - jnp.sum(batch["visual"], axis=1)))
    assert loss(attention="text_only", text_len=text) == pytest.approx(text_loss, rel=1e-5)
    assert loss(attention="text_only", text_len=text + 7) == pytest.approx(text_loss, rel=1e-5)
    assert abs(loss(attention="text_only", text_len=text // 2) - text_loss) > 1e-4


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """4 steps in one go, checkpoints every 2."""
    cfg = config.load(TINY, short_run(tmp_path_factory.mktemp("straight"), tiny[0], "steps=4", "checkpoint.every=2"))
    return cfg, run(cfg)


def _assert_trees_close(a, b, atol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol), a, b)


def test_resume_equals_straight_run(tiny, straight, tmp_path):
    overrides = short_run(tmp_path, tiny[0], "checkpoint.every=2")
    run(config.load(TINY, overrides + ["steps=2"]))  # "interrupted" after 2 steps
    # A save cut off half-way (a step directory Orbax never renamed into place) must be ignored.
    partial = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("half-written")
    mngr = checkpointing.manager(tmp_path / "checkpoints", config.CheckpointConfig())
    assert mngr.latest_step() == 2
    mngr.close()
    resumed = run(config.load(TINY, overrides + ["steps=4"]))
    _, ref = straight
    assert int(resumed.state["step"]) == 4
    _assert_trees_close(resumed.state["params"], ref.state["params"], 0)
    _assert_trees_close(resumed.state["opt_state"], ref.state["opt_state"], 0)
    np.testing.assert_array_equal(resumed.state["rng"], ref.state["rng"])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in ref.history[2:]]


def _cli(overrides, env=None, extra=()):
    return [sys.executable, "-m", "train.main", "--config", str(TINY), *overrides, *extra]




def _two_processes(overrides, devices: int = 1):
    """python -m train.main as two jax.distributed processes on this machine, `devices` virtual CPU devices
    each; their stdouts."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(_cli(overrides, extra=["--coordinator", f"localhost:{port}", "--num-processes", "2",
                                                     "--process-id", str(i)]),
                              cwd=ROOT, env=subprocess_env(f"--xla_force_host_platform_device_count={devices}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


QWEN_TINY = {  # a tiny Qwen2.5-VL for the byte tokenizer (<video> 258, <image> 259, vision start/end 261/262)
    "model_type": "qwen2_5_vl", "video_token_id": 258, "image_token_id": 259, "vision_start_token_id": 261,
    "vision_end_token_id": 262,
    "text": {"vocab_size": 264, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2,
             "num_kv_heads": 1, "head_dim": 16, "model_type": "qwen2_5_vl_text", "mrope_section": [2, 3, 3]},
    "vision": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
               "fullatt_block_indexes": [0]},
}


def test_two_qwen_processes_train_like_one(tmp_path):
    """Qwen2.5-VL videos over two jax.distributed processes of 2 virtual devices each, data=2 x fsdp=2 (rows
    and parameters split across processes): each process's rows' patches are gathered into the global
    batch's video input in row order (a structured input, not batch-major), so the losses and the trained
    parameters equal one device training on the same global batches (noise off: it is drawn per row
    position). Two video lengths, so both processes must draw the same one each step; each process
    checkpoints its own data-loader state."""
    rng = np.random.default_rng(0)
    (tmp_path / "frames").mkdir()
    records = []
    for i in range(8):  # 4 frames of 32 px: each 2 a 336 x 336 temporal patch group after resizing, 144 tokens
        np.save(tmp_path / "frames" / f"{i}.npy", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
        records.append({"id": str(i), "frames": f"frames/{i}.npy", "conversations": [
            {"role": "user", "content": "Describe the video."},
            {"role": "assistant", "content": ["A red ball.", "Two blue squares move left.", "Nothing moves."][i % 3]}]})
    data.write_manifest(tmp_path / "m.jsonl", records)
    overrides = [f"target.path={tmp_path / 'target'}", f"target.random_init={json.dumps(QWEN_TINY)}",
                 f"data.manifest={tmp_path / 'm.jsonl'}",
                 "data.video_placeholder=<|vision_start|><video><|vision_end|>",
                 "data.num_frames=[2,4]", "data.seq_len=[192,352]", "data.seed=1", "data.batch_size=4",
                 "regenerate.enabled=false", "objective.noise=0", "steps=2", "log.every=1", "optim.warmup_steps=1",
                 "checkpoint.every=2", *QUIET]
    cfg = config.load(TINY, [f"workdir={tmp_path / 'one'}", *overrides])
    assert [data.batch_settings(cfg.data, k, cfg.data.seed, 4)[0] for k in range(2)] == [2, 4]  # both drawn
    one = run(cfg)
    assert one.history[0]["scored_positions"] > 0
    assert "done: step 2" in _two_processes([f"workdir={tmp_path / 'two'}", *overrides, "mesh.fsdp=2"], devices=2)[0]
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints" / "2" / "data"))[-2:] == ["process_0-of-2.json",
                                                                                       "process_1-of-2.json"]
    params = nnx.to_pure_dict(nnx.state(sparrow_jax.load(tmp_path / "two" / "draft"), nnx.Param))  # on 1 device
    _assert_trees_close(params, one.state["params"], 2e-5)
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in one.history], rtol=1e-5)
    np.testing.assert_allclose([r["pass0/top1"] for r in rows], [r["pass0/top1"] for r in one.history])


def test_offline_features_train_like_online(tiny, straight, tmp_path):
    """Stored target states (python -m train.features) give the same run without the target forward."""
    from train.features import write_features
    from train.tokenizer import load as load_tokenizer
    from train.trainer import load_target

    overrides = short_run(tmp_path, tiny[0], "steps=4", "checkpoint.every=2", f"data.features_dir={tmp_path / 'f'}")
    cfg = config.load(TINY, overrides)
    target = load_target(cfg.target)
    records = data.read_manifest(cfg.data.manifest)
    write_features(cfg, target, load_tokenizer("byte"), records, progress=False)
    assert len(list((tmp_path / "f").glob("*.npy"))) == len(records)
    offline = run(cfg)
    _, ref = straight
    _assert_trees_close(offline.state["params"], ref.state["params"], 1e-6)
    with pytest.raises(ValueError, match="other settings"):
        run(config.load(TINY, overrides + ["data.seq_len=96"]))

    # Interrupted: meta.json not yet "complete", a file missing. Training refuses; writing again keeps the
    # files already there and writes the rest.
    meta = tmp_path / "f" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "complete": False}))
    files = sorted((tmp_path / "f").glob("*.npy"))
    files[-1].unlink()
    kept = files[0].stat().st_mtime_ns
    with pytest.raises(ValueError, match="incomplete"):
        run(cfg)
    write_features(cfg, target, load_tokenizer("byte"), records, progress=False)
    assert files[-1].is_file() and files[0].stat().st_mtime_ns == kept
    assert json.loads(meta.read_text())["complete"]


def test_offline_features_mix_video_lengths(tiny, tmp_path):
    """Records that set their own num_frames (offline mode): stored at their length, trained side by side."""
    from train.features import write_features
    from train.tokenizer import load as load_tokenizer
    from train.trainer import load_target

    records = [dict(r, num_frames=1) if i % 2 else r for i, r in enumerate(data.read_manifest(tiny[0].regenerate.output))]
    data.write_manifest(tmp_path / "mixed.jsonl", data.absolute_paths(records))
    cfg = config.load(TINY, short_run(tmp_path, tiny[0], "steps=2", f"data.manifest={tmp_path / 'mixed.jsonl'}",
                                      f"data.features_dir={tmp_path / 'f'}", "objective.attention=text_only",
                                      "objective.text_len=96"))
    target, tok = load_target(cfg.target), load_tokenizer("byte")
    records = data.read_manifest(cfg.data.manifest)
    write_features(cfg, target, tok, records, batch_size=4, progress=False)
    for rec in records[:4]:
        ids = data.encode(rec, tok, target.config, cfg.data.seq_len, cfg.data.num_frames)["ids"]
        visual = int(np.sum(ids == target.config.video_token_id))
        assert visual == target.config.num_video_tokens(data.record_frames(rec, cfg.data.num_frames))
        assert len(np.load(tmp_path / "f" / f"{rec['_index']:08d}.npy")) == len(ids)
    assert len(run(cfg).history) == 2


def tiny_draft(num_layers: int):
    from sparrow_jax.config import DraftConfig, TextConfig

    layers = TextConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=num_layers, num_heads=2,
                        num_kv_heads=1, head_dim=8)
    return build_model(DraftConfig(layers, window=8), rngs=nnx.Rngs(3))


@pytest.mark.parametrize("have, want", [(1, 2), (2, 4)])
def test_grown_draft_computes_what_it_grew_from(have, want):
    """draft.num_layers above draft.init_from's count adds layers that start as the identity: the grown
    draft's outputs and k/v equal the original's (its own layers kept), and the new layers' other weights
    are not zero, so they can learn."""
    from train.trainer import grow_draft

    draft = tiny_draft(have)
    grown = grow_draft(draft, want, seed=1)
    assert grown.config.layers.num_layers == want
    rng = np.random.default_rng(0)
    embeds, hidden = (jnp.asarray(rng.standard_normal((1, 5, 16)), jnp.float32) for _ in range(2))
    positions, mask = jnp.arange(5)[None], jnp.tril(jnp.ones((1, 5, 5), bool))
    out, (k, v) = draft(embeds, hidden, positions, mask)
    out2, (k2, v2) = grown(embeds, hidden, positions, mask)
    np.testing.assert_allclose(out2, out, atol=1e-6)
    np.testing.assert_allclose(k2[:have], k, atol=1e-6)
    assert float(jnp.abs(grown.rest.mlp.up_proj.kernel[...][have - 1:]).max()) > 0


def test_fewer_layers_than_the_init_draft_is_an_error(tmp_path):
    from types import SimpleNamespace

    from train.stand_ins import save_model
    from train.trainer import init_draft

    save_model(tmp_path / "d", tiny_draft(2))
    target = SimpleNamespace(lm=SimpleNamespace(config=SimpleNamespace(hidden_size=16)))
    cfg = config.TrainConfig(target=config.TargetConfig(path=str(tmp_path)), data=config.DataConfig(manifest="m"),
                             draft=config.DraftSection(num_layers=1, init_from=str(tmp_path / "d")))
    with pytest.raises(ValueError, match="draft.num_layers=1 but draft.init_from .* has 2 layers"):
        init_draft(cfg, target)
    grown = init_draft(dataclasses.replace(cfg, draft=dataclasses.replace(cfg.draft, num_layers=3)), target)
    assert grown.config.layers.num_layers == 3


def test_regeneration_resumes_and_a_cut_output_is_refused(tiny, tmp_path, monkeypatch):
    """Regeneration writes each batch as it finishes: a run stopped after one batch leaves it (and no
    output); the next run regenerates only the rest and ends with what a straight run writes. An output
    holding fewer records than its source is refused unless regenerate.allow_incomplete."""
    from train import prepare, regeneration
    from train.tokenizer import load as load_tokenizer

    source = data.read_manifest(tiny[0].data.manifest)[:4]
    data.write_manifest(tmp_path / "small.jsonl", data.absolute_paths(source))
    overrides = short_run(tmp_path, tiny[0], f"data.manifest={tmp_path / 'small.jsonl'}", "regenerate.enabled=true",
                          "regenerate.batch_size=2", "regenerate.max_new_tokens=6")
    cfg = config.load(TINY, overrides + [f"regenerate.output={tmp_path / 'straight.jsonl'}"])
    target, tok = prepare.load_target(cfg.target), load_tokenizer("byte")
    prepare.prepare_data(cfg, target, tok)  # straight

    calls = []
    real = regeneration.generate

    def counting(*args, **kw):
        calls.append(kw["seed"])
        if len(calls) == 2 and kill:
            raise KeyboardInterrupt  # killed during the second batch
        return real(*args, **kw)

    monkeypatch.setattr(regeneration, "generate", counting)
    out = tmp_path / "regenerated.jsonl"
    cfg = config.load(TINY, overrides + [f"regenerate.output={out}"])
    kill = True
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_data(cfg, target, tok)
    assert not out.exists() and [p.name for p in sorted((tmp_path / "regenerated.jsonl.parts").glob("0*"))] == ["00000.json"]
    kill, calls[:] = False, []
    assert prepare.prepare_data(cfg, target, tok) == str(out)
    assert calls == [2]  # only the second batch (seeded by its first record) ran again
    assert out.read_text() == (tmp_path / "straight.jsonl").read_text()
    assert not (tmp_path / "regenerated.jsonl.parts").exists()

    out.write_text("".join(out.read_text().splitlines(keepends=True)[:3]))  # cut short
    with pytest.raises(ValueError, match=f"{out} holds 3 records, its source .*small.jsonl 4: an interrupted"):
        prepare.prepare_data(cfg, target, tok)
    allowed = config.load(TINY, overrides + [f"regenerate.output={out}", "regenerate.allow_incomplete=true"])
    with pytest.warns(UserWarning, match="holds 3 records"):
        prepare.prepare_data(allowed, target, tok)


def test_user_mistakes_are_one_line_errors(tiny, straight, tmp_path, capsys):
    """python -m train.main: each mistake prints one `error:` line (exit 2), no traceback."""
    from train.main import main

    (tmp_path / "bad.jsonl").write_text('{"conversations": [{"role": "user", "content": "hi"}]}\n{not json\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "novideo.jsonl").write_text(json.dumps({"video": "gone.mp4", "conversations": [
        {"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / "config.json").write_text('{"steps": 2,}')
    cases = [
        ([f"data.manifest={tmp_path / 'bad.jsonl'}"], f"{tmp_path / 'bad.jsonl'}:2: not JSON"),
        ([f"data.manifest={tmp_path / 'empty.jsonl'}"], "the manifest is empty"),
        ([f"data.manifest={tmp_path / 'novideo.jsonl'}"], f"novideo.jsonl:1: {tmp_path / 'gone.mp4'} does not exist"),
        ([f"target.path={tmp_path / 'none'}", "target.random_init=null"], "holds no converted checkpoint"),
        (["workdir=/sys/sparrow-readonly"], "/sys/sparrow-readonly"),
        # A restart whose draft differs from the one its checkpoints hold.
        ([f"workdir={straight[0].workdir}", "steps=6", "draft.num_layers=2"],
         f"{straight[0].workdir}/checkpoints/4 was saved by a run with another draft or optimizer (parameter "),
    ]
    for extra, message in cases:
        rc = main(["--config", str(TINY), *short_run(tmp_path / "wd", tiny[0], *extra)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and err.splitlines()[-1].startswith("error: "), (extra, err)
        assert message in err.splitlines()[-1], (message, err)
    assert main(["--config", str(tmp_path / "config.json")]) == 2
    assert f"{tmp_path / 'config.json'} is not valid JSON" in capsys.readouterr().err


def _run_until(argv, condition, timeout=300):
    """Start `python -m train.main argv`, kill -9 it as soon as `condition()` holds; its stderr."""
    proc = subprocess.Popen(_cli(argv), cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not condition() and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.kill()
    err = proc.communicate()[1]
    assert proc.returncode == -9, f"the run ended before its kill point:\n{err[-3000:]}"
    return err


def test_killed_runs_resume_to_the_same_parameters(tiny, tmp_path):
    """kill -9 during an asynchronous checkpoint write; the same command again finishes with parameters
    bit-identical to an uninterrupted run, no finished step redone. (An interrupted regeneration keeping its
    finished batches: test_regeneration_resumes_and_a_cut_output_is_refused; each part is written atomically.)"""
    source = data.read_manifest(tiny[0].data.manifest)[:4]
    data.write_manifest(tmp_path / "small.jsonl", data.absolute_paths(source))

    def overrides(wd):
        return short_run(wd, tiny[0], f"data.manifest={tmp_path / 'small.jsonl'}", "regenerate.enabled=true",
                         "regenerate.batch_size=1", "regenerate.max_new_tokens=4", "steps=6", "checkpoint.every=2",
                         "log.every=1")

    ref = run(config.load(TINY, overrides(tmp_path / "ref")))
    wd = tmp_path / "faulty"
    ckpts = wd / "checkpoints"

    def saving_after_step_2():  # step 2's checkpoint is done and a later one is being written
        names = os.listdir(ckpts) if ckpts.is_dir() else []
        return "2" in names and any("tmp" in n for n in names)

    _run_until(overrides(wd), saving_after_step_2)
    finished = max(int(n) for n in os.listdir(ckpts) if n.isdigit())
    resumed = run(config.load(TINY, overrides(wd)))
    assert resumed.history[0]["step"] == finished + 1  # no finished step is redone
    assert (wd / "regenerated.jsonl").read_text() == (tmp_path / "ref" / "regenerated.jsonl").read_text()
    _assert_trees_close(resumed.state["params"], ref.state["params"], 0)
    _assert_trees_close(resumed.state["opt_state"], ref.state["opt_state"], 0)
    _assert_trees_close(nnx.to_pure_dict(nnx.state(sparrow_jax.load(wd / "draft"), nnx.Param)),
                        nnx.to_pure_dict(nnx.state(sparrow_jax.load(tmp_path / "ref" / "draft"), nnx.Param)), 0)


def test_reduced_vocabulary_draft_trains_and_stays_lossless(tiny, tmp_path):
    """draft.vocab_size: the draft scores the answers' most frequent tokens (ties by id) through its own head,
    started from the target's lm_head columns; it trains, exports with its vocabulary, and decodes losslessly."""
    from train.tokenizer import tokenize_conversation
    from train.vocab import frequent_tokens
    from sparrow_jax.manifest import messages

    cfg = config.load(TINY, short_run(tmp_path, tiny[0], "steps=3", "draft.vocab_size=24"))
    result = run(cfg)
    target, draft = sparrow_jax.load(cfg.target.path), sparrow_jax.load(cfg.export)
    records, tok = data.read_manifest(cfg.data.manifest), ByteChatTokenizer()
    counts = np.zeros(target.lm.config.vocab_size, np.int64)
    for rec in records:
        ids, assistant = tokenize_conversation(tok, messages(rec, cfg.data.system_prompt))
        counts += np.bincount(ids[assistant], minlength=len(counts))
    assert draft.config.vocab == frequent_tokens(records, tok, 24, len(counts), cfg.data.system_prompt)
    assert json.loads((tmp_path / "draft_vocab.json").read_text()) == list(draft.config.vocab)  # kept for a resume
    assert sorted(draft.config.vocab, key=lambda t: (-counts[t], t)) == list(draft.config.vocab)
    assert counts[list(draft.config.vocab)].min() >= np.delete(counts, list(draft.config.vocab)).max()
    assert draft.head.kernel.shape == (target.lm.config.hidden_size, 24) and np.isfinite(result.history[-1]["loss"])
    prompts = [prompt_of(r, tok, target.config, cfg.data) for r in records[:2]]
    ids, videos = [p for p, _ in prompts], [v for _, v in prompts]
    greedy = infer.generate(target, ids, videos, max_new_tokens=16).token_ids()
    assert infer.generate(target, ids, videos, max_new_tokens=16, draft=draft,
                          tree=TreeShape.chain(3)).token_ids() == greedy
