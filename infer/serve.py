"""python -m infer.serve: an OpenAI-compatible HTTP server (POST /v1/chat/completions, GET /v1/models) over
the Engine, for a converted target (and draft).

    python -m infer.serve --demo                       # the embedded pair, on http://127.0.0.1:8000/v1
    python -m infer.serve --target ckpt/llava-ov-7b --draft ckpt/sparrow-llava --port 8000 --max-batch 8

A message's video is a content part {"type": "video_url", "video_url": {"url": "file:///path/clip.mp4"}} (or a
local path), sampled as --frames / --fps / --preset say; text parts of one message are joined by newlines;
system, user and assistant turns are rendered with the checkpoint's chat template, the video in the first
user turn. Settings: max_tokens (max_completion_tokens), temperature, top_p, seed, stop (a row's decoding
ends at a stop string, and its text is cut before it), and the extensions top_k and
repetition_penalty. `stream: true` sends chat.completion.chunk events as tokens are accepted, then
`data: [DONE]`. `usage` counts tokens; the `sparrow` field holds the batch's speculative statistics (tau,
cycles, acceptance, prefill and decoding times, batch size). Requests arriving within --batch-window-ms of
each other run as one batch (up to --max-batch) when compatible: same video frame count and size, same
sampling values (seeds may differ: each row samples from its own seed). A bad request gets a 4xx with
OpenAI's error body; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from infer.openai_api import ApiError, chunk, completion, completion_id, parse_chat, sparrow_stats, usage
from infer.options import add_model_options
from infer.scheduler import Job, Scheduler
from sparrow_jax.cli_help import ArgumentParser



def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m infer.serve", description=__doc__)
    add_model_options(p, "serve the embedded demo pair (sparrow_jax/demo) with its settings")
    h = p.add_argument_group("server")
    h.add_argument("--host", default="127.0.0.1", help="address to listen on")
    h.add_argument("--port", type=int, default=8000, help="port to listen on")
    h.add_argument("--max-batch", type=int, default=4, help="most requests decoded as one batch")
    h.add_argument("--batch-window-ms", type=float, default=20.0,
                   help="how long the first request of a batch waits for others, in milliseconds")
    h.add_argument("--model-name", help="the model's id in the API (default: the target directory's name)")
    h.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return p


class Service:
    """The checked front end, the engine and the batching worker behind the routes."""

    def __init__(self, front, engine, model: str, max_batch: int, window_s: float):
        self.front, self.engine, self.model, self.created = front, engine, model, int(time.time())
        eos = front.defaults.eos_token_id
        eos = front.tokenizer.eos_token_ids if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.scheduler = Scheduler(engine, eos, max_batch, window_s)

    def prepare(self, body) -> tuple:
        """(the checked ChatRequest, its prompt ids, pixels, batch key, settings); reads the video (blocking)."""
        from sparrow_jax.prompting import chat_messages

        req = parse_chat(body, self.model)
        front = self.front
        try:
            resolved = front.settings(req.settings)
        except ValueError as e:
            raise ApiError(str(e)) from None
        try:
            video = front.read(req.video)
        except (ValueError, OSError) as e:
            raise ApiError(f"video {req.video}: {' '.join(str(e).split())}", "messages") from None
        try:
            ids, pixels = front.inputs(chat_messages(req.turns), video)
        except ValueError as e:
            raise ApiError(str(e), "messages") from None
        try:
            front.check_fits(ids, len(video.frames), resolved.max_new_tokens, "max_tokens")
        except ValueError as e:
            raise ApiError(str(e), "messages", code="context_length_exceeded") from None
        # Each row samples from its own seed's key, so requests of different seeds share a batch.
        key = (video.frames.shape, tuple(resolved.sampling().items()), resolved.repetition_penalty)
        seed = 0 if resolved.seed is None else resolved.seed
        return req, ids, pixels, key, dict(req.settings, max_new_tokens=resolved.max_new_tokens, seed=seed)


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        service.scheduler.start()
        yield
        service.scheduler.stop()

    app = FastAPI(title="sparrow-jax", lifespan=lifespan)
    error = lambda e: JSONResponse(e.body(), status_code=e.status)  # noqa: E731

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": service.model, "object": "model", "created": service.created,
                                            "owned_by": "sparrow-jax"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(ApiError("the request body is not valid JSON"))
        try:
            req, ids, pixels, key, settings = await asyncio.to_thread(service.prepare, body)
        except ApiError as e:
            return error(e)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        service.scheduler.submit(Job(ids, pixels, key, settings, req.stops,
                                     lambda event: loop.call_soon_threadsafe(events.put_nowait, event)))
        cid, model, speculative = completion_id(), service.model, service.engine.draft is not None
        if req.stream:
            return StreamingResponse(_events(events, cid, model, len(ids), req.include_usage, speculative),
                                     media_type="text/event-stream")
        text = []
        while (event := await events.get())[0] == "delta":
            text.append(event[1])
        if event[0] == "error":
            return error(ApiError(event[1], status=500, kind="server_error"))
        _, reason, n, stats = event
        return completion(cid, model, "".join(text), reason, usage(len(ids), n), sparrow_stats(stats, speculative))

    return app


async def _events(events, cid: str, model: str, prompt_tokens: int, include_usage: bool, speculative: bool):
    sse = lambda body: f"data: {json.dumps(body)}\n\n"  # noqa: E731
    yield sse(chunk(cid, model, {"role": "assistant", "content": ""}))
    while (event := await events.get())[0] == "delta":
        yield sse(chunk(cid, model, {"content": event[1]}))
    if event[0] == "error":
        yield sse(ApiError(event[1], status=500, kind="server_error").body())
    else:
        _, reason, n, stats = event
        yield sse(chunk(cid, model, {}, reason, sparrow=sparrow_stats(stats, speculative)))
        if include_usage:
            yield sse(chunk(cid, model, None, usage=usage(prompt_tokens, n)))
    yield "data: [DONE]\n\n"


def make_server(args):
    """(uvicorn.Server, Service) for parsed options: the checks, then the weights load."""
    from pathlib import Path

    import uvicorn

    from infer.requests import Frontend

    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise ValueError(f"--max-batch must be >= 1 and --batch-window-ms >= 0, got {args.max_batch}, "
                         f"{args.batch_window_ms}")
    front = Frontend.from_args(args)
    model = args.model_name or ("sparrow-demo" if args.demo else Path(args.target).resolve().name)
    service = Service(front, front.engine(), model, args.max_batch, args.batch_window_ms / 1000)
    config = uvicorn.Config(create_app(service), host=args.host, port=args.port, log_level=args.log_level)
    return uvicorn.Server(config), service


def main(argv=None) -> int:
    from infer.requests import run_command

    def run(args) -> int:
        server, service = make_server(args)
        print(f"serving {service.model} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
        server.run()
        return 0

    return run_command(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
