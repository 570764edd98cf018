"""OpenAI's chat-completions format: a request body checked and turned into chat turns, a video file and
settings; the response, chunk and error bodies. No HTTP here (that is `infer/serve.py`)."""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from urllib.parse import unquote, urlparse

from sparrow_jax.sampling import SamplingConfig

MAX_STOPS = 4  # as OpenAI
# Request fields with the only value this server implements (others are refused, naming the field).
_NEUTRAL = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "tools": None,
            "response_format": None}


class ApiError(Exception):
    """A request the server refuses: HTTP `status` and OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclasses.dataclass
class ChatRequest:
    turns: list  # (role, text) pairs for prompting.chat_messages; the video goes into the first user turn
    video: str  # a local file
    settings: dict  # HF-named generation settings the request sets
    stops: list[str]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with usage


def parse_chat(body, model: str) -> ChatRequest:
    """The checked request; an ApiError names the first problem."""
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    if body.get("model") not in (None, model):
        raise ApiError(f"the model {body['model']!r} does not exist; this server serves {model!r}", "model", 404,
                       "model_not_found")
    for name, neutral in _NEUTRAL.items():
        if body.get(name) not in (None, neutral):
            raise ApiError(f"{name}={body[name]!r} is not supported by this server", name)
    turns, videos = _messages(body.get("messages"))
    if len(videos) != 1:
        raise ApiError(f"a request needs exactly one video part ({{\"type\": \"video_url\", \"video_url\": "
                       f"{{\"url\": \"file:///path/clip.mp4\"}}}}), found {len(videos)}", "messages")
    if not any(role == "user" for role, _ in turns):
        raise ApiError("the messages need a user turn to carry the video", "messages")
    settings = {}
    for field, name, kind in (("max_completion_tokens", "max_new_tokens", int), ("max_tokens", "max_new_tokens", int),
                              ("temperature", "temperature", float), ("top_p", "top_p", float),
                              ("top_k", "top_k", int), ("repetition_penalty", "repetition_penalty", float),
                              ("seed", "seed", int)):
        value = body.get(field)
        if value is None or name in settings:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
                or (kind is float and not math.isfinite(value)):
            raise ApiError(f"{field} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}",
                           field)
        settings[name] = kind(value)
    if settings.get("max_new_tokens", 1) < 1:
        raise ApiError(f"max_tokens must be >= 1, got {settings['max_new_tokens']}", "max_tokens")
    try:  # the values as given (greedy decoding would ignore a bad top_p, say)
        SamplingConfig(**{k: settings[k] for k in ("temperature", "top_k", "top_p", "repetition_penalty")
                          if k in settings})
    except ValueError as e:
        raise ApiError(str(e), str(e).split(" ")[0]) from None
    stops = body.get("stop")
    stops = [] if stops is None else [stops] if isinstance(stops, str) else stops
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(f"stop must be a non-empty string or a list of at most {MAX_STOPS}, got {body.get('stop')!r}",
                       "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(f"stream must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options") or {}
    return ChatRequest(turns, videos[0], settings, stops, stream, bool(options.get("include_usage")))


def _messages(messages) -> tuple[list, list]:
    """((role, text) turns, the video paths) of the messages."""
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    turns, videos = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(f"{where}: role must be system, user or assistant, got "
                           f"{m.get('role') if isinstance(m, dict) else m!r}", where)
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise ApiError(f"{where}: content must be a string or a list of content parts", where)
        texts = []
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "video_url" and m["role"] == "user":
                videos.append(_local_path(part.get("video_url"), where))
            else:
                raise ApiError(f"{where}: unsupported content part {part!r} (text parts, and video_url parts in "
                               "user turns)", where)
        turns.append((m["role"], "\n".join(texts)))
    return turns, videos


def _local_path(video_url, where: str) -> str:
    url = video_url.get("url") if isinstance(video_url, dict) else video_url
    if not isinstance(url, str) or not url:
        raise ApiError(f"{where}: video_url needs a url (file:///path/clip.mp4 or a local path)", where)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (or a Windows drive letter)
        return url
    raise ApiError(f"{where}: the video must be a local file (file:///path or a path), got {url!r}", where)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(cid: str, model: str, text: str, reason: str, usage: dict, stats: dict) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                         "logprobs": None}],
            "usage": usage, "sparrow": stats}


def chunk(cid: str, model: str, delta: dict | None, reason: str | None = None, **extra) -> dict:
    """A chat.completion.chunk: one choice with `delta` (or no choice when None: the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sparrow_stats(stats: dict, speculative: bool) -> dict:
    """The extension field: the batch's decoding statistics (tau, cycles, timings; DSR needs decode_s)."""
    keys = ("tau", "cycles", "acceptance", "prefill_s", "draft_prefill_s", "decode_s", "compile_s", "new_tokens",
            "decode_tokens_per_s",
            "batch_size", "stopped_early")
    return {"speculative": speculative, **{k: stats[k] for k in keys if k in stats}}
