"""HF-style generation settings: `GenerationConfig` takes the fields of transformers' `GenerationConfig`
that this engine implements, reads a checkpoint's `generation_config.json`, and merges settings in the
order users expect (explicit arguments over a given config over the checkpoint's defaults).

HF semantics kept: `do_sample=False` decodes greedily whatever the temperature; with `do_sample=True`
unset fields take HF's defaults (temperature 1.0, top_k 50, top_p 1.0); sampling implied by
`temperature > 0` alone (no do_sample) has no top-k filter unless one is set. Our own argument convention,
`temperature=0` for greedy, maps to the same thing.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

from sparrow_jax.sampling import SamplingConfig

GENERATION_CONFIG = "generation_config.json"
# HF fields read here; others in a generation_config.json (bos_token_id, transformers_version, ...) are
# not settings of decoding and are ignored.
_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "eos_token_id",
           "stop_strings", "pad_token_id", "seed")
_UNSUPPORTED = {"num_beams": 1, "num_return_sequences": 1, "penalty_alpha": None, "no_repeat_ngram_size": 0,
                "min_new_tokens": None}


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; None = not set here (a later default applies)."""

    max_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    stop_strings: str | tuple | None = None  # HF's: a row stops once its text ends with one (or one list per row)
    pad_token_id: int | None = None
    seed: int | tuple[int, ...] | None = None  # one seed, or one per row (`sampling.row_keys`)

    @classmethod
    def from_dict(cls, d: dict, source: str = "generation config") -> "GenerationConfig":
        for name, neutral in _UNSUPPORTED.items():
            if d.get(name, neutral) not in (neutral, None):
                raise ValueError(f"{source}: {name}={d[name]!r} is not supported by this engine (only "
                                 f"{', '.join(_FIELDS)}); remove it")
        values = {k: d[k] for k in _FIELDS if d.get(k) is not None}
        for name in ("eos_token_id", "stop_strings", "seed"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def of(cls, config: "GenerationConfig | dict | None") -> "GenerationConfig":
        """A config from a GenerationConfig, a dict as a generation_config.json holds it, or None (empty)."""
        if config is None:
            return cls()
        return cls.from_dict(config) if isinstance(config, dict) else config

    @classmethod
    def from_file(cls, path) -> "GenerationConfig":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(d, str(path))

    @classmethod
    def from_checkpoint(cls, directory) -> "GenerationConfig":
        """The defaults a converted checkpoint carries (`<dir>/tokenizer/generation_config.json`, copied by
        `convert target` from the HF directory); empty if it has none."""
        for path in (Path(directory) / "tokenizer" / GENERATION_CONFIG, Path(directory) / GENERATION_CONFIG):
            if path.is_file():
                return cls.from_file(path)
        return cls()

    def merged(self, *later: "GenerationConfig | dict | None") -> "GenerationConfig":
        """This config with the set fields of each later one laid over it in turn (a dict: keyword
        arguments, checked to be settings)."""
        out = self
        for other in later:
            if other is None:
                continue
            fields = other if isinstance(other, dict) else {f.name: getattr(other, f.name)
                                                            for f in dataclasses.fields(other)}
            unknown = set(fields) - {f.name for f in dataclasses.fields(self)}
            if unknown:
                raise TypeError(f"unknown generation settings {sorted(unknown)}; known: {', '.join(_FIELDS)}")
            out = dataclasses.replace(out, **{k: v for k, v in fields.items() if v is not None})
        return out

    def sampling_config(self) -> SamplingConfig:
        """The checked sampling values (an error names a bad one)."""
        penalty = 1.0 if self.repetition_penalty is None else self.repetition_penalty
        return SamplingConfig(**self.sampling(), repetition_penalty=penalty)

    def sampling(self) -> dict:
        """The engine's sampling arguments (temperature 0 = greedy) under HF's rules."""
        sample = self.do_sample if self.do_sample is not None else (self.temperature or 0.0) > 0
        if not sample:
            return {"temperature": 0.0, "top_k": 0, "top_p": 1.0}
        temperature = 1.0 if self.temperature is None else self.temperature
        if temperature == 0:
            warnings.warn("do_sample=True with temperature 0: decoding greedily", stacklevel=3)
        # HF's top_k default (50) when sampling was asked for with do_sample; off when implied by temperature.
        default_k = 50 if self.do_sample else 0
        return {"temperature": temperature, "top_k": default_k if self.top_k is None else self.top_k,
                "top_p": 1.0 if self.top_p is None else self.top_p}
