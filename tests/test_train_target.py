"""Target mode of python -m train.main (how the embedded demo target is made): a tiny LLaVA-OneVision
fine-tuned on synthetic videos and their descriptions with the synthetic tokenizer; the loss falls and
the trained target loads with its tokenizer, like a converted checkpoint."""

import json
from pathlib import Path

import pytest
from helpers import TINY_MODEL

import sparrow_jax
from sparrow_jax.prompting import load_tokenizer
from train import config
from sparrow_jax.synthetic.dataset import write_dataset
from train.synthetic.tokenizer import corpus, save_tokenizer, train_tokenizer
from train.trainer import run

DEMO = Path(__file__).resolve().parents[1] / "train" / "configs" / "demo_target.json"
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("target")
    write_dataset(wd / "data" / "train", count=16, frames=4, size=28)
    save_tokenizer(train_tokenizer(corpus(200), vocab_size=320), wd / "tokenizer")
    cfg = config.load(DEMO, [f"workdir={wd}", "steps=150", "data.batch_size=4", "optim.lr=3e-3", "data.seq_len=96", "data.num_frames=4",
                             f"target.random_init={json.dumps(TINY_MODEL)}", "optim.warmup_steps=5",
                             "log.every=10", "log.progress=false", "log.tensorboard=false"])
    return cfg, run(cfg)


def test_target_mode_loss_falls(trained):
    _, result = trained
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.6 * first["loss"]
    assert last["token_accuracy"] > first["token_accuracy"] + 0.2


def test_trained_target_loads_with_its_tokenizer(trained):
    cfg, _ = trained
    target = sparrow_jax.load(cfg.export)
    assert target.config.text.vocab_size == 320
    tok = load_tokenizer(cfg.export)
    ids = tok.prompt_ids("Describe the video.")
    assert ids.count(target.config.video_token_id) == 1


def test_target_mode_rejects_regeneration():
    with pytest.raises(Exception, match="mode=target trains on the manifest's answers"):
        config.load(DEMO, ["regenerate.enabled=true"])
