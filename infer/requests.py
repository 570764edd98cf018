"""A video request as `python -m infer`, `python -m infer.serve` and `python -m infer.batch` all take it: the
model named by the shared options (checked before any weights load), a video file sampled as the options
say, chat messages rendered with the checkpoint's template into prompt ids and pixels, and the check that
the prompt fits the KV cache. Each app adds only how the request reaches it (flags, HTTP, a manifest)."""

from __future__ import annotations

import dataclasses

from infer.options import DEFAULT_MAX_NEW, copy_config, default_tree, mesh_of, tree_shape
from sparrow_jax import compile_cache
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.video import DEFAULT_PRESET, PRESETS, Sampling


def demo_defaults(args) -> None:
    """--demo: the embedded pair (sparrow_jax.demo) and its settings where the options leave them unset."""
    if not args.demo:
        return
    from sparrow_jax import demo

    args.target = args.target or str(demo.TARGET)
    args.draft = args.draft or str(demo.DRAFT)
    if args.frames is None and args.fps is None:
        args.frames = demo.FRAMES
    # Neither --chain nor --tree: `Frontend` falls back to a chain of DEMO_CHAIN unless tree="auto" is measured.




def run_command(parser, argv, run) -> int:
    """Parse `argv` (--demo filling in the model), then `run(args)`; a mistake is one line on stderr."""
    from sparrow_jax.errors import add_debug_flag, run_cli

    add_debug_flag(parser)
    args = parser.parse_args(argv)
    demo_defaults(args)
    if args.target is None:
        parser.error("--target is required (or --demo)")
    compile_cache.from_args(args)
    return run_cli(lambda: run(args), args.debug, extra=(ImportError,))  # a user's mistake: one line, exit 2


@dataclasses.dataclass
class Frontend:
    """The checked model options and what turns a video file and messages into a prompt for them."""

    args: object  # the parsed shared options (infer.options.add_model_options)
    config: object  # the target's config
    draft_config: object | None
    tree: object  # TreeShape, autotune.Auto (--tree auto) or None: `default_tree` once the target is loaded
    copy: object  # CopyConfig | None (--copy)
    tokenizer: object  # prompting.ChatTokenizer
    preset: object  # video.Preset
    max_pixels: int | None
    defaults: object  # GenerationConfig: DEFAULT_MAX_NEW under the checkpoint's generation_config.json
    mesh: object = None  # jax.sharding.Mesh (--mesh) or None: one device

    @classmethod
    def from_args(cls, args) -> "Frontend":
        """Every check that can fail before the weights load: draft shape, configs, the tokenizer."""
        from sparrow_jax import checkpoint
        from sparrow_jax.generation import GenerationConfig
        from sparrow_jax.prompting import load_tokenizer, tokenizer_dir, tokenizer_mismatch

        tree, copy, mesh = tree_shape(args, args.draft is not None), copy_config(args), mesh_of(args)
        config = checkpoint.target_config(args.target)
        draft_config = None if args.draft is None else checkpoint.draft_config(args.draft, config.text)
        tokenizer = load_tokenizer(args.tokenizer or args.target)
        if problem := tokenizer_mismatch(tokenizer, config):
            raise ValueError(_foreign_tokenizer(args, tokenizer_dir(args.tokenizer or args.target), problem))
        preset = PRESETS[args.preset or DEFAULT_PRESET[config.model_type]]
        defaults = GenerationConfig(max_new_tokens=DEFAULT_MAX_NEW).merged(GenerationConfig.from_checkpoint(args.target))
        return cls(args, config, draft_config, tree, copy, tokenizer, preset, args.max_pixels or preset.max_pixels,
                   defaults, mesh)

    def sampling(self, num_frames: int | None = None) -> Sampling:
        """How frames are sampled: `num_frames` (a manifest record's own), else --frames / --fps /
        --max-frames over the preset."""
        args, base = self.args, self.preset.sampling
        if num_frames is not None or args.frames is not None:
            base = Sampling(num_frames=num_frames or args.frames, multiple=base.multiple)
        elif args.fps is not None:
            base = dataclasses.replace(base, num_frames=None, fps=args.fps)
        if args.max_frames is not None:
            base = dataclasses.replace(base, max_frames=args.max_frames, min_frames=min(base.min_frames, args.max_frames))
        return base

    def read(self, path, num_frames: int | None = None, progress: bool = False):
        """The sampled, resized frames of a video file (`video.Video`)."""
        from sparrow_jax.processing import frame_size
        from sparrow_jax.video import read_video

        size = lambda h, w: frame_size(self.config, h, w, max_pixels=self.max_pixels)  # noqa: E731
        return read_video(path, self.sampling(num_frames), size, progress=progress)

    def inputs(self, messages, video):
        """(prompt ids with the video placeholder expanded, the video's model input) for chat messages in
        `prompting.chat_messages`' form (one video part)."""
        from sparrow_jax.processing import video_prompt

        ids = self.tokenizer.message_ids(messages)
        return video_prompt(self.config, ids, video.frames, fps=video.fps, max_pixels=self.max_pixels)

    def settings(self, settings: dict):
        """The resolved GenerationConfig of a request's settings; bad values are a ValueError naming them."""
        resolved = self.defaults.merged(settings)
        resolved.sampling_config()
        if resolved.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {resolved.max_new_tokens}")
        return resolved

    def check_fits(self, ids, frames: int, max_new: int, new_tokens: str = "--max-new-tokens") -> None:
        """A ValueError naming the counts and the fixes when the prompt and `max_new` tokens need more KV
        slots than --capacity (`new_tokens`: what the user calls the token limit)."""
        from sparrow_jax.generation import kv_slots_needed, proposal_shape

        shape = max((proposal_shape(t, c, self.draft_config is not None) for t, c in self._budgets()),
                    key=lambda s: -1 if s is None else s.total + s.max_depth)
        need = kv_slots_needed(len(ids), max_new, shape)
        if need > self.args.capacity:
            video_tokens = int((ids == self.config.video_token_id).sum())
            extra = "" if shape is None else " + one draft tree"
            raise ValueError(
                f"the prompt is {len(ids)} tokens ({video_tokens} of them for {frames} video frames); with "
                f"{max_new} new tokens{extra} it needs {need} KV slots (padding included), more than "
                f"--capacity {self.args.capacity}: "
                f"sample fewer frames (--frames, --fps, --max-frames), lower --max-pixels (Qwen2.5-VL), lower "
                f"{new_tokens}, or raise --capacity if memory allows")

    def fallback_tree(self) -> TreeShape:
        """The budget without --chain/--tree before tree="auto" is measured: --demo's chain, else EAGLE-2's."""
        from infer.demo import DEMO_CHAIN

        return TreeShape.chain(DEMO_CHAIN) if self.args.demo else TreeShape()

    def _budgets(self):
        """(tree, copy) pairs this request may draft with: --tree auto's candidates (or, unset, those and the
        fallback), else the one given."""
        from sparrow_jax.generation import autotune

        if self.draft_config is None:
            return [(None, self.copy)]
        if self.tree is not None and not isinstance(self.tree, autotune.Auto):
            return [(self.tree, self.copy)]
        auto = self.tree or autotune.Auto()
        options = auto.candidates or autotune.candidates(auto.acceptance or autotune.PRIOR, self.copy)
        return [(self.fallback_tree(), self.copy), *options]

    def engine(self):
        """The Engine over the checked checkpoints (loads the weights)."""
        import sparrow_jax
        from sparrow_jax import checkpoint
        from sparrow_jax.generation import Engine

        args = self.args
        target = sparrow_jax.load(args.target, args.dtype, mesh=self.mesh)  # straight into its shards
        draft = None if self.draft_config is None else checkpoint.load_draft(args.draft, self.draft_config,
                                                                             args.window, args.dtype, mesh=self.mesh)
        if draft is not None and self.tree is None:
            self.tree = default_tree(target, args.draft, self.fallback_tree())
        return Engine(target, draft, tree=self.tree, copy=self.copy, tokenizer=self.tokenizer,
                      generation_config=self.defaults, mesh=self.mesh)


def _foreign_tokenizer(args, where, problem) -> str:
    fix = ("pass --tokenizer with the target's own tokenizer (the Hugging Face directory it was converted from)"
           if args.tokenizer else
           f"convert the target again from its Hugging Face directory (python -m convert target --src HF_DIR "
           f"--dst {args.target} --overwrite), which copies its tokenizer, or pass --tokenizer HF_DIR")
    return f"the tokenizer in {where} does not belong to --target {args.target}: {problem}; {fix}"
