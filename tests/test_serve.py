"""`python -m infer.serve` through the official openai client against a loopback server on the tiny pair: the
answer equals `python -m infer --json`'s, streamed deltas concatenate to it, concurrent requests are batched
and each equals its own answer, stop strings cut the text, bad requests get 4xx and the server keeps serving."""

import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from infer import serve
from infer.cli import main as cli

MAX_NEW = 10
FRAMES = 4
PROMPTS = ["describe the video", "what happens in the video", "is the video short", "describe the video please"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_pair):
    """(openai client, the Service) of a server in a thread: speculative with a chain of 3."""
    _, target, draft, _ = tiny_pair
    port = free_port()
    args = serve.build_parser().parse_args([
        "--target", str(target), "--draft", str(draft), "--chain", "3", "--window", "16", "--frames", str(FRAMES),
        "--capacity", "512", "--port", str(port), "--max-batch", "4", "--batch-window-ms", "600"])
    http, service = serve.make_server(args)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):  # at most ~20 s
        try:
            urllib.request.urlopen(f"{base}/models", timeout=2).read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail("the server did not come up")
    yield openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=300), service, base
    http.should_exit = True
    thread.join(60)
    assert not thread.is_alive()


def messages(video, prompt):
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{video}"}},
                                         {"type": "text", "text": prompt}]}]


def ask(client, video, prompt, **kw):
    return client.chat.completions.create(model="target", messages=messages(video, prompt), **kw)


def cli_json(tiny_pair, capsys, prompt, *extra):
    _, target, draft, video = tiny_pair
    rc = cli(["--target", str(target), "--draft", str(draft), "--chain", "3", "--window", "16", "--video", str(video),
              "--prompt", prompt, "--frames", str(FRAMES), "--json", "--quiet", *map(str, extra)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def test_answer_and_stream_equal_the_cli(server, tiny_pair, capsys):
    client, service, _ = server
    video = tiny_pair[3]
    assert [m.id for m in client.models.list()] == ["target"]
    want = cli_json(tiny_pair, capsys, PROMPTS[0], "--max-new-tokens", MAX_NEW)
    got = ask(client, video, PROMPTS[0], max_tokens=MAX_NEW, temperature=0)
    assert got.choices[0].message.content == want["text"] and got.object == "chat.completion"
    assert got.choices[0].finish_reason == ("stop" if len(want["tokens"]) < MAX_NEW else "length")
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want["prompt_tokens"], len(want["tokens"]))
    assert got.usage.total_tokens == want["prompt_tokens"] + len(want["tokens"])
    stats = got.model_extra["sparrow"]
    assert stats["speculative"] and stats["cycles"] >= 1 and stats["tau"] >= 1 and stats["decode_s"] > 0
    chunks = list(ask(client, video, PROMPTS[0], max_tokens=MAX_NEW, stream=True,
                      stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == want["text"] and sum(bool(d) for d in deltas) >= 2  # in pieces, as accepted
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-2].choices[0].finish_reason == got.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == len(want["tokens"]) and chunks[-2].model_extra["sparrow"]["tau"] >= 1


def test_concurrent_requests_are_batched_and_each_equals_its_own_answer(server, tiny_pair):
    client, service, _ = server
    video = tiny_pair[3]
    limits = [MAX_NEW, MAX_NEW - 3, MAX_NEW, 4]  # rows of one batch with their own token limits
    # Sampled, each with its own seed: a row draws from its own key, so batching does not change it.
    kw = lambda i: dict(max_tokens=limits[i], temperature=0.8, seed=i + 1)  # noqa: E731
    alone = [ask(client, video, p, **kw(i)).choices[0].message.content for i, p in enumerate(PROMPTS)]
    assert len(set(alone)) > 1
    before = len(service.scheduler.batches)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: ask(client, video, PROMPTS[i], **kw(i)), range(4)))
    assert [r.choices[0].message.content for r in together] == alone
    assert max(service.scheduler.batches[before:]) >= 2  # some of them ran as one batch
    assert sum(service.scheduler.batches[before:]) == 4


def test_stop_strings_end_the_answer_before_them(server, tiny_pair):
    client, _, _ = server
    video = tiny_pair[3]
    full = ask(client, video, PROMPTS[0], max_tokens=MAX_NEW).choices[0].message.content
    words = full.split(" ")
    assert len(words) >= 4, full
    stop = " " + words[2]
    cut = full[: full.index(stop)]
    got = ask(client, video, PROMPTS[0], max_tokens=MAX_NEW, stop=[stop, "never there"])
    assert got.choices[0].message.content == cut and got.choices[0].finish_reason == "stop"
    chunks = list(ask(client, video, PROMPTS[0], max_tokens=MAX_NEW, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def post(base, body: str):
    request = urllib.request.Request(f"{base}/chat/completions", body.encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, tiny_pair, tmp_path):
    client, _, base = server
    video = tiny_pair[3]
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    cases = [
        (dict(messages=[]), openai.BadRequestError, "messages must be a non-empty list"),
        (dict(messages=messages(tmp_path / "missing.mp4", "hi")), openai.BadRequestError, "no such file"),
        (dict(messages=messages(tmp_path / "notes.mp4", "hi")), openai.BadRequestError, "cannot read it as a video"),
        (dict(messages=[{"role": "user", "content": "hi"}]), openai.BadRequestError, "exactly one video part"),
        (dict(messages=messages(video, "hi"), model="gpt-4o"), openai.NotFoundError, "'gpt-4o' does not exist"),
        (dict(messages=messages(video, "hi"), top_p=0), openai.BadRequestError, "top_p must be in (0, 1]"),
        (dict(messages=messages(video, "hi"), temperature=-1), openai.BadRequestError, "temperature must be a finite"),
        (dict(messages=messages(video, "hi"), max_tokens=1000), openai.BadRequestError, "more than --capacity 512"),
        (dict(messages=messages(video, "hi"), n=2), openai.BadRequestError, "n=2 is not supported"),
    ]
    for kw, error, message in cases:
        with pytest.raises(error) as e:
            client.chat.completions.create(**{"model": "target", **kw})
        assert message in e.value.body["message"], (message, e.value.body)
    # nan is not JSON, but Python's json (and clients built on it) write it: refused by name
    status, body = post(base, json.dumps({"messages": messages(video, "hi"), "temperature": math.nan}))
    assert status == 400 and body["error"]["param"] == "temperature" and "finite" in body["error"]["message"]
    status, body = post(base, "{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    good = ask(client, video, PROMPTS[0], max_tokens=MAX_NEW)
    assert good.choices[0].message.content and good.usage.completion_tokens >= 1
