"""The training config: typed, frozen, validated sections; a JSON file of defaults plus `key=value` overrides.

    cfg = load("train/configs/tiny.json", ["steps=50", "optim.lr=1e-3"])

Override values are parsed as JSON when they parse (numbers, true/false, null, lists), else taken as
strings. Unknown keys and wrongly typed values are errors that name the key. `{workdir}` inside any
string value is replaced by the run's work directory.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from sparrow_jax.config import ConfigError, _require, read_json


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    path: str = ""  # a converted target checkpoint (python -m convert target ...)
    dtype: str = "float32"
    # When `path` holds no checkpoint: build a random target from this model config tree (our
    # config.json format) and save it there. For tiny offline runs and tests only.
    random_init: dict | None = None
    random_seed: int = 0
    random_scale: float = 1.0  # multiplies the random weights (peakier distributions than std 0.02)


@dataclasses.dataclass(frozen=True)
class DraftSection:
    num_layers: int = 1
    # None: the target's own value (REFERENCE: ViSpec's draft copies the target's attention shape).
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    window: int = 1024  # inference-time VATA window stored in the exported config
    pinned: int = 0
    init_from: str = ""  # a converted draft to continue from (num_layers above its count grows it); empty: random
    # > 0: the draft scores only the vocab_size tokens its training answers use most (EAGLE-3's reduced vocabulary,
    # train/vocab.py), with its own head of that many rows, started from the target's lm_head; 0: every token.
    vocab_size: int = 0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    manifest: str = ""  # JSONL, see train/data.py
    tokenizer: str = "byte"  # "byte" (the built-in tiny ChatML byte tokenizer) or an HF tokenizer directory
    video_placeholder: str = ""  # how the byte tokenizer writes the video; empty: "<video>" (see tokenizer.load)
    # Every row is padded (or its answer truncated) to seq_len tokens. Lists train on mixed video lengths:
    # each batch draws one entry of num_frames (repeat an entry to weigh it) and the seq_len beside it.
    # Offline features and answer regeneration use the first entry.
    seq_len: int | list = 2048
    batch_size: int = 8  # global; each process reads batch_size / process_count rows
    num_frames: int | list = 8  # frames sampled uniformly from each video
    # > 0: in half the rows, RoPE positions of the frames are spread out as if the video had k frames, k
    # log-uniform in [frames, stretch_frames], the sampled ones evenly among them: long-video positions at
    # short-video cost (1-D positions only, i.e. LLaVA-OneVision). See train/data.py:stretch_positions.
    stretch_frames: int = 0
    fps: float | None = None  # frame rate of the sampled frames (Qwen2.5-VL M-RoPE time axis)
    seed: int = 0  # shuffling seed
    system_prompt: str = ""
    features_dir: str = ""  # offline mode: the target states stored by python -m train.features (empty: online)
    synthetic_examples: int = 0  # >0 and no manifest yet: write a synthetic one (tiny runs, tests)

    @property
    def buckets(self) -> list[tuple[int, int]]:
        """(num_frames, seq_len) pairs a batch draws from; empty when the two lists differ in length."""
        frames = self.num_frames if isinstance(self.num_frames, list) else [self.num_frames]
        lens = self.seq_len if isinstance(self.seq_len, list) else [self.seq_len] * len(frames)
        return list(zip(frames, lens)) if len(frames) == len(lens) else []


@dataclasses.dataclass(frozen=True)
class RegenerateConfig:
    enabled: bool = False  # rewrite answers with the target itself before training
    output: str = "{workdir}/regenerated.jsonl"
    max_new_tokens: int = 256
    batch_size: int = 8
    temperature: float = 0.0
    allow_incomplete: bool = False  # train on an output holding fewer records than its source (else an error)


ATTENTION = ("ivsb", "text_only")
VISUAL_INPUT = ("mid_layer", "final_hidden")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    capture_layer: int | None = None  # target layer whose output feeds visual positions; None: L // 2
    visual_input: str = "mid_layer"  # IVSB; "final_hidden": EAGLE-style fc(embed, h) at visual positions too
    attention: str = "ivsb"  # "ivsb": over the whole IVSB sequence; "text_only": visual keys masked (as VATA)
    text_only_fraction: float = 0.0  # with "ivsb": this fraction of rows (drawn each step) trains text-only
    # With "text_only": > 0 runs the draft over each row's first text_len text tokens alone (the visual
    # positions dropped, not masked), so a step costs what the text costs however long the video; text past
    # text_len is not trained on. 0: over the whole row, visual keys masked.
    text_len: int = 0
    mtp_passes: int = 1  # extra passes on the draft's own shifted outputs (ViSpec: 1-2)
    pass_decay: float = 0.8  # pass j weighs pass_decay**j (EAGLE-3 / SpecForge)
    mtp_stop_gradient: bool = True  # do not backpropagate into the previous pass through its outputs
    feature_weight: float = 1.0  # SmoothL1 on hidden states (EAGLE-1/2)
    ce_weight: float = 0.1  # soft cross-entropy against the target's distribution (EAGLE-1/2)
    noise: float = 0.2  # uniform noise U(-noise/2, noise/2) on the target hidden inputs (EAGLE)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-5  # EAGLE-1/2 AdamW recipe
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.0
    clip: float = 0.5
    warmup_steps: int = 2000
    schedule: str = "constant"  # after warmup: "constant" or "cosine" (to 0 at `steps`)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices left over by fsdp x tensor
    fsdp: int = 1
    tensor: int = 1


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1000  # steps between saves (and one at the end)
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every: int = 10  # steps between metric fetches (the only host syncs of the loop)
    progress: bool = True
    tensorboard: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    workdir: str = "runs/default"
    # "draft": train a Sparrow draft against the frozen target; "target": fine-tune the target itself on
    # the answers (next-token cross-entropy; how the embedded demo target is made).
    mode: str = "draft"
    steps: int = 1000
    seed: int = 0
    export: str = "{workdir}/draft"  # the trained draft as a converted checkpoint (sparrow_jax.load)
    target: TargetConfig = TargetConfig()
    draft: DraftSection = DraftSection()
    data: DataConfig = DataConfig()
    regenerate: RegenerateConfig = RegenerateConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()

    def __post_init__(self):
        _require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _require(self.mode in ("draft", "target"), f"mode must be 'draft' or 'target', got {self.mode!r}")
        _require(self.mode == "draft" or not (self.regenerate.enabled or self.data.features_dir),
                 "mode=target trains on the manifest's answers: disable regenerate and data.features_dir")
        _require(bool(self.target.path), "target.path is required (a converted target checkpoint)")
        _require(bool(self.data.manifest), "data.manifest is required (a JSONL manifest, see train/data.py)")
        d = self.data
        _require(len(d.buckets) >= 1 and all(isinstance(v, int) and v >= 8 for _, v in d.buckets)
                 and all(isinstance(f, int) and f >= 1 for f, _ in d.buckets) and d.batch_size >= 1,
                 "data.seq_len must be >= 8, num_frames >= 1 and batch_size >= 1; as lists, of equal length")
        _require(not d.features_dir or (len(d.buckets) == 1 and not d.stretch_frames),
                 "offline features (data.features_dir) are stored for one num_frames and seq_len, unstretched")
        o = self.objective
        _require(not self.data.features_dir or o.visual_input == "mid_layer",
                 "offline features (data.features_dir) store mid-layer states at visual positions; "
                 "objective.visual_input must be mid_layer")
        _require(o.attention in ATTENTION, f"objective.attention must be one of {ATTENTION}, got {o.attention!r}")
        _require(o.visual_input in VISUAL_INPUT, f"objective.visual_input must be one of {VISUAL_INPUT}, got {o.visual_input!r}")
        _require(o.mtp_passes >= 0, f"objective.mtp_passes must be >= 0, got {o.mtp_passes}")
        _require(self.draft.vocab_size >= 0,
                 f"draft.vocab_size must be >= 0 (0: every token), got {self.draft.vocab_size}")
        _require(0.0 <= o.text_only_fraction <= 1.0,
                 f"objective.text_only_fraction must be in [0, 1], got {o.text_only_fraction}")
        _require(o.text_len >= 0 and (o.text_len == 0 or o.attention == "text_only"),
                 f"objective.text_len={o.text_len} needs objective.attention=text_only (and must be >= 0)")
        _require(o.feature_weight >= 0 and o.ce_weight >= 0 and o.noise >= 0, "objective weights and noise must be >= 0")
        _require(self.optim.schedule in ("constant", "cosine"), f"optim.schedule must be constant or cosine, got {self.optim.schedule!r}")
        _require(self.optim.lr > 0 and self.optim.warmup_steps >= 0, "optim.lr must be > 0, warmup_steps >= 0")
        m = self.mesh
        _require(m.fsdp >= 1 and m.tensor >= 1 and (m.data == -1 or m.data >= 1), f"bad mesh {m}")
        _require(self.checkpoint.every >= 1 and self.checkpoint.keep >= 1, "checkpoint.every and keep must be >= 1")
        _require(self.log.every >= 1, "log.every must be >= 1")


def _check_type(key: str, value, hint):
    """Validate (and lightly coerce: int -> float) `value` against the field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is not type(None):
                try:
                    return _check_type(key, value, a)
                except ConfigError:
                    pass
        raise ConfigError(f"{key}: expected {hint}, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is dict and isinstance(value, dict):
        return value
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls, tree: dict, prefix: str = ""):
    return cls(**_fields(cls, tree, prefix))


def _fields(cls, tree: dict, prefix: str = "") -> dict:
    """The fields `tree` sets, checked against `cls` (known keys, types; sections built)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix or 'config'}: expected an object, got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {sorted(names)}")
    kw = {}
    for name, value in tree.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kw[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kw[name] = _check_type(prefix + name, value, hint)
    return kw


def _default(field: dataclasses.Field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    tree[leaf] = value


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _substitute(tree, workdir: str):
    if isinstance(tree, dict):
        return {k: _substitute(v, workdir) for k, v in tree.items()}
    return tree.replace("{workdir}", workdir) if isinstance(tree, str) else tree


def add_arguments(parser, required: bool = True) -> None:
    """--config FILE and the key=value overrides, as every training command takes them."""
    what = "JSON file of settings, e.g. train/configs/tiny.json (python -m train.main --print-config lists them)"
    parser.add_argument("--config", required=required, help=what if required else what + "; without it, the defaults")
    parser.add_argument("overrides", nargs="*", help="key=value settings over the file, e.g. steps=100 optim.lr=1e-4")


def load(path=None, overrides=()) -> TrainConfig:
    """The config in JSON file `path` (None: all defaults) with `key=value` overrides applied."""
    return _build(TrainConfig, resolve(path, overrides))


def resolve(path=None, overrides=()) -> dict:
    """Every setting `load` gives, as a tree (`{workdir}` replaced), with each key and type checked but not
    the rules across keys: what `python -m train.main --print-config` shows, also for settings that could
    not train yet (the defaults alone have no target.path)."""
    tree = read_json(path) if path else {}  # invalid JSON: an error naming the file
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-4)")
        key, text = item.split("=", 1)
        _set(tree, key.strip(), _parse_value(text))
    settings = {f.name: _default(f) for f in dataclasses.fields(TrainConfig)} | _fields(TrainConfig, tree)
    settings = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in settings.items()}
    return _substitute(settings, settings["workdir"])  # defaults hold {workdir} too


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
