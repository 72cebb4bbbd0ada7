"""OpenAI chat completions and completions on the generation engine (issue 14, "The API"): a real
uvicorn server, the official ``openai`` client and httpx, real engines over tiny random Llama
models (and once, the real SmolLM2-135M-Instruct)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
import torch
from http_kit import serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from aiaas_serving import (
    BatchPolicy,
    GenerationOutcome,
    OpenAIGeneration,
    Runtime,
    mount_openai,
)
from aiaas_serving.generation import (
    EngineOptions,
    GenerationEngine,
    GenerationModel,
    GenerationTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    SamplingParams,
)

MODEL = "tiny-chat"
CONTEXT = 256
HELLO = [{"role": "user", "content": "Hello there!"}]


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def byte_tokenizer() -> GenerationTokenizer:
    """A real byte-level BPE tokenizer (``tokenizers``) of 256 byte tokens and ChatML's two
    special tokens, with SmolLM2's chat template shape: every text, any script, round-trips."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])  # 256, 257
    return GenerationTokenizer(backend, eos_token_ids=[257], chat_template=CHATML)


def tiny_model(tokenizer: GenerationTokenizer | None = None) -> GenerationModel:
    """A tiny random-initialised Llama (2 layers, hidden 32, GQA 4:2) over the byte tokenizer."""
    config = LlamaConfig(
        vocab_size=258,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=CONTEXT,
        eos_token_ids=(257,),
    )
    return GenerationModel(
        name=MODEL,
        config=config,
        model=LlamaForCausalLM.random(config, seed=0),
        tokenizer=tokenizer or byte_tokenizer(),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def client_for(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="unused",
        base_url=f"{str(http.base_url).rstrip('/')}/v1",
        max_retries=0,
        http_client=http,
    )


class Served:
    """A started engine behind OpenAIGeneration under uvicorn, with its clients and outcomes."""

    def __init__(
        self, engine: GenerationEngine, http: httpx.AsyncClient, outcomes: list[Any]
    ) -> None:
        self.engine = engine
        self.http = http
        self.api = client_for(http)
        self.outcomes = outcomes

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        tokenizer = self.engine.tokenizer
        return list(
            tokenizer.encode(tokenizer.apply_chat_template(messages), add_special_tokens=False)
        )

    async def alone(self, prompt: list[int], **params: Any) -> Any:
        """The same request straight on the engine (the reference)."""
        return await self.engine.generate(prompt, SamplingParams(**params)).result()

    async def settled(self, count: int) -> list[GenerationOutcome]:
        for _ in range(500):
            if len(self.outcomes) >= count:
                break
            await asyncio.sleep(0.01)
        return list(self.outcomes)


@pytest.fixture(scope="module")
def model() -> GenerationModel:
    torch.manual_seed(0)
    return tiny_model()


@asynccontextmanager
async def served(model: Any, **options: Any) -> AsyncIterator[Served]:
    outcomes: list[GenerationOutcome] = []
    engine_options = EngineOptions(
        **{"block_size": 4, "num_blocks": 160, "max_num_seqs": 8, **options}
    )
    async with GenerationEngine(model, engine_options) as engine:
        app = OpenAIGeneration(
            {MODEL: engine}, on_complete=lambda _scope, outcome: outcomes.append(outcome)
        )
        async with serve(app) as http:
            yield Served(engine, http, outcomes)


@pytest.fixture
async def tiny(model: Any) -> AsyncIterator[Served]:
    async with served(model) as server:
        yield server


# -- chat completions -----------------------------------------------------------------------------


async def test_chat_completion_matches_the_engine_and_counts_usage(tiny: Served) -> None:
    reply = await tiny.api.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=12, temperature=0
    )
    prompt = tiny.prompt_ids(HELLO)
    expected = await tiny.alone(prompt, max_tokens=12, temperature=0)
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert reply.created > 1_700_000_000
    (choice,) = reply.choices
    assert (choice.index, choice.message.role) == (0, "assistant")
    assert choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert choice.logprobs is None
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == expected.completion_tokens
    assert reply.usage.total_tokens == len(prompt) + expected.completion_tokens
    if expected.finish_reason == "length":
        assert expected.completion_tokens == 12
    (outcome,) = await tiny.settled(1)
    assert outcome.ok
    assert (outcome.endpoint, outcome.model, outcome.status, outcome.error_code) == (
        "chat.completions",
        MODEL,
        200,
        None,
    )
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (
        len(prompt),
        expected.completion_tokens,
    )
    assert outcome.total_tokens == reply.usage.total_tokens
    assert outcome.finish_reason == expected.finish_reason
    assert not outcome.stream


async def test_streamed_chunks_reassemble_to_the_greedy_answer(tiny: Served) -> None:
    whole = await tiny.api.chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=20, temperature=0
    )
    stream = await tiny.api.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_completion_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1
    assert next(iter(ids)).startswith("chatcmpl-")
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert all(c.usage is None for c in chunks[:-1])
    outcomes = await tiny.settled(2)
    assert outcomes[1].stream
    assert outcomes[1].ok
    assert outcomes[1].completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


async def test_raw_sse_lines_and_done(tiny: Served) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 5, "stream": True, "temperature": 0}
    async with tiny.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-request-id"]
        raw = (await response.aread()).decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    for event in events[:-2]:
        assert event.startswith("data: {")
        assert json.loads(event.removeprefix("data: "))["object"] == "chat.completion.chunk"


async def test_stop_strings_end_the_text_before_them(tiny: Served) -> None:
    free = await tiny.api.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=30, temperature=0
    )
    text = free.choices[0].message.content or ""
    assert len(text) >= 6, text
    stop = text[3:5]
    cut = text[: text.index(stop)]
    for stream in (False, True):
        if stream:
            chunks = await tiny.api.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=30, temperature=0, stop=[stop], stream=True
            )
            pieces = [c async for c in chunks]
            got = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
            finish = pieces[-1].choices[0].finish_reason
        else:
            reply = await tiny.api.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=30, temperature=0, stop=stop
            )
            got, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
        assert (got, finish) == (cut, "stop")


async def test_a_seed_reproduces_a_sampled_answer(tiny: Served) -> None:
    async def sampled(seed: int) -> str:
        reply = await tiny.api.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=16, temperature=1.0, top_p=0.95, seed=seed
        )
        return reply.choices[0].message.content or ""

    first, again = await asyncio.gather(sampled(7), sampled(7))
    assert first == again
    others = {await sampled(seed) for seed in (8, 9, 10)}
    assert others - {first}  # other seeds give other answers


async def test_chat_logprobs(tiny: Served) -> None:
    reply = await tiny.api.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert len(logprobs.content) == reply.usage.completion_tokens  # type: ignore[union-attr]
    for item in logprobs.content:
        assert item.logprob <= 0.0
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)  # greedy: the top one
        assert item.bytes == list(item.token.encode())
    stream = await tiny.api.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        stream=True,
    )
    streamed = [
        item
        async for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs
        for item in chunk.choices[0].logprobs.content or ()
    ]
    assert [i.token for i in streamed] == [i.token for i in logprobs.content]
    assert all(i.top_logprobs == [] for i in streamed)


async def test_message_content_as_text_parts_and_system_roles(tiny: Served) -> None:
    parts = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there!"}],
        },
    ]
    plain = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello\nthere!"},
    ]
    a = await tiny.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": parts, "max_tokens": 4, "temperature": 0},
    )
    b = await tiny.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": plain, "max_tokens": 4, "temperature": 0},
    )
    assert a.status_code == b.status_code == 200
    assert a.json()["choices"] == b.json()["choices"]
    assert a.json()["usage"]["prompt_tokens"] == len(tiny.prompt_ids(plain))


# -- completions ----------------------------------------------------------------------------------


async def test_completions_text_and_token_ids(tiny: Served) -> None:
    prompt = "Once upon a time"
    ids = list(tiny.engine.tokenizer.encode(prompt, add_special_tokens=True))
    expected = await tiny.alone(ids, max_tokens=10, temperature=0)
    reply = await tiny.api.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0
    )
    assert reply.id.startswith("cmpl-")
    assert reply.object == "text_completion"
    assert reply.choices[0].text == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        len(ids),
        expected.completion_tokens,
    )
    by_ids = await tiny.api.completions.create(
        model=MODEL, prompt=ids, max_tokens=10, temperature=0
    )
    assert by_ids.choices[0].text == expected.text
    default = await tiny.api.completions.create(model=MODEL, prompt=prompt, temperature=0)
    assert default.usage is not None
    assert default.usage.completion_tokens <= 16  # OpenAI's default max_tokens
    stream = await tiny.api.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason
    outcomes = await tiny.settled(4)
    assert [o.endpoint for o in outcomes] == ["completions"] * 4


async def test_completions_logprobs(tiny: Served) -> None:
    reply = await tiny.api.completions.create(
        model=MODEL, prompt="abc", max_tokens=5, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert len(logprobs.tokens or []) == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert all(lp <= 0 for lp in logprobs.token_logprobs or [])
    assert all(len(top) <= 2 for top in logprobs.top_logprobs or [])
    assert (logprobs.text_offset or [None])[0] == 0


# -- errors ---------------------------------------------------------------------------------------


async def test_only_one_choice(tiny: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await tiny.api.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert caught.value.param == "n"
    assert "'n' must be 1" in caught.value.message
    one = await tiny.api.chat.completions.create(model=MODEL, messages=HELLO, n=1, max_tokens=1)
    assert len(one.choices) == 1


async def test_over_the_context_is_context_length_exceeded(tiny: Served) -> None:
    long = [{"role": "user", "content": "x" * (CONTEXT + 10)}]
    with pytest.raises(openai.BadRequestError) as caught:
        await tiny.api.chat.completions.create(model=MODEL, messages=long)
    err = caught.value
    assert (err.code, err.param, err.type) == (
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
    )
    assert f"maximum context length is {CONTEXT} tokens" in err.message
    prompt = len(tiny.prompt_ids(HELLO))
    with pytest.raises(openai.BadRequestError) as caught:
        await tiny.api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=CONTEXT)
    assert caught.value.code == "context_length_exceeded"
    assert f"({prompt} in the messages, {CONTEXT} in the completion)" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await tiny.api.completions.create(model=MODEL, prompt="y" * CONTEXT, stream=True)
    assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "prompt")
    fits = await tiny.api.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=CONTEXT - prompt, temperature=0
    )
    assert fits.usage is not None
    assert fits.usage.total_tokens <= CONTEXT


async def test_unknown_model_is_404(tiny: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await tiny.api.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    listing = await tiny.api.models.list()
    assert [m.id for m in listing.data] == [MODEL]
    assert (await tiny.api.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await tiny.api.models.retrieve("gpt-4o")


@pytest.mark.parametrize(
    ("path", "payload", "param", "says"),
    [
        ("chat", {"messages": HELLO}, "model", "'model' is required"),
        ("chat", {"model": MODEL}, "messages", "'messages' is required"),
        ("chat", {"model": MODEL, "messages": []}, "messages", "non-empty list"),
        ("chat", {"model": MODEL, "messages": ["hi"]}, "messages[0]", "must be an object"),
        (
            "chat",
            {"model": MODEL, "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "'tool'",
        ),
        (
            "chat",
            {"model": MODEL, "messages": [{"role": "user", "content": None}]},
            "messages[0].content",
            "is required",
        ),
        (
            "chat",
            {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "messages[0].content[0].type",
            "reads text only",
        ),
        ("chat", {"model": MODEL, "messages": HELLO, "temperature": 3}, "temperature", "0 to 2"),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "temperature": "hot"},
            "temperature",
            "number",
        ),
        ("chat", {"model": MODEL, "messages": HELLO, "top_p": 1.5}, "top_p", "0 to 1"),
        ("chat", {"model": MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens", ">= 1"),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "max_completion_tokens": True},
            "max_completion_tokens",
            ">= 1",
        ),
        ("chat", {"model": MODEL, "messages": HELLO, "stop": ["a"] * 5}, "stop", "at most 4"),
        ("chat", {"model": MODEL, "messages": HELLO, "stop": [""]}, "stop", "must not be empty"),
        ("chat", {"model": MODEL, "messages": HELLO, "stop": 3}, "stop", "string or a list"),
        ("chat", {"model": MODEL, "messages": HELLO, "seed": 2**70}, "seed", "between"),
        ("chat", {"model": MODEL, "messages": HELLO, "logprobs": 3}, "logprobs", "true or false"),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "top_logprobs": 2},
            "top_logprobs",
            "needs 'logprobs': true",
        ),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "0 to 20",
        ),
        ("chat", {"model": MODEL, "messages": HELLO, "stream": "yes"}, "stream", "true or false"),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
            "only allowed when 'stream' is true",
        ),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "tools": [{"type": "function"}]},
            "tools",
            "not supported",
        ),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "presence_penalty": 0.5},
            "presence_penalty",
            "not supported",
        ),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "frobnicate": 1},
            "frobnicate",
            "Unrecognized request argument supplied: frobnicate",
        ),
        (
            "chat",
            {"model": MODEL, "messages": [{"role": "user", "content": ["hi"]}]},
            "messages[0].content[0]",
            "must be an object",
        ),
        (
            "chat",
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
            "must be a string",
        ),
        (
            "chat",
            {"model": MODEL, "messages": [{"role": "user", "content": 7}]},
            "messages[0].content",
            "string or a list of text parts",
        ),
        ("chat", {"model": MODEL, "messages": HELLO, "top_k": -1}, "top_k", ">= 0"),
        (
            "chat",
            {"model": MODEL, "messages": HELLO, "stream": True, "stream_options": 1},
            "stream_options",
            "must be an object",
        ),
        (
            "chat",
            {
                "model": MODEL,
                "messages": HELLO,
                "stream": True,
                "stream_options": {"include_usage": "yes"},
            },
            "stream_options.include_usage",
            "true or false",
        ),
        ("completions", {"model": MODEL}, "prompt", "'prompt' is required"),
        ("completions", {"model": MODEL, "prompt": ["a", "b"]}, "prompt", "one prompt"),
        ("completions", {"model": MODEL, "prompt": ""}, "prompt", "must not be empty"),
        ("completions", {"model": MODEL, "prompt": [10**9]}, "prompt", "token id"),
        ("completions", {"model": MODEL, "prompt": "a", "logprobs": 21}, "logprobs", "0 to 20"),
        ("completions", {"model": MODEL, "prompt": "a", "echo": True}, "echo", "not supported"),
        ("completions", {"model": MODEL, "prompt": "a", "best_of": 3}, "best_of", "not supported"),
        ("completions", {"model": MODEL, "prompt": "a", "messages": HELLO}, "messages", "Unrec"),
    ],
)
async def test_bad_parameters_are_400s_naming_the_param(
    tiny: Served, path: str, payload: dict[str, Any], param: str, says: str
) -> None:
    route = "/v1/chat/completions" if path == "chat" else "/v1/completions"
    response = await tiny.http.post(route, json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert says in error["message"]
    assert response.headers["x-request-id"]


async def test_equivalent_spellings_give_the_same_answer(tiny: Served) -> None:
    async def text(route: str, **body: Any) -> str:
        response = await tiny.http.post(route, json={"model": MODEL, "max_tokens": 6, **body})
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return str(choice["message"]["content"] if "message" in choice else choice["text"])

    chat = "/v1/chat/completions"
    greedy = await text(chat, messages=HELLO, temperature=0)
    assert await text(chat, messages=HELLO, top_p=0) == greedy  # only the top token
    assert await text(chat, messages=HELLO, temperature=0, stream=None, n=None) == greedy
    assert await text(chat, messages=HELLO, temperature=0, user="u-1", top_k=1) == greedy
    plain = await text("/v1/completions", prompt="abc", temperature=0)
    assert await text("/v1/completions", prompt=["abc"], temperature=0) == plain
    assert await text("/v1/completions", prompt="abc", temperature=0, echo=False) == plain
    # a prompt of 1,000 characters or more is tokenised in a worker thread
    with pytest.raises(openai.BadRequestError, match="context length is 256"):
        await tiny.api.completions.create(model=MODEL, prompt="long " * 300)
    listed = await tiny.http.post("/v1/models", json={})
    assert (listed.status_code, listed.headers["allow"]) == (405, "GET, HEAD")


async def test_on_complete_failures_are_logged_never_sent(
    model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_scope: Any, _outcome: GenerationOutcome) -> None:
        raise RuntimeError("accounting is down")

    async with GenerationEngine(model, EngineOptions(block_size=4, num_blocks=64)) as engine:
        app = OpenAIGeneration({MODEL: engine}, on_complete=broken)
        async with serve(app) as http:
            reply = await http.post(
                "/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 1}
            )
    assert reply.status_code == 200
    assert "on_complete failed for generation request" in caplog.text
    with pytest.raises(ValueError, match="prompt_tokens must be >= 0"):
        GenerationOutcome(
            request_id="r",
            endpoint="completions",
            model=None,
            prompt_tokens=-1,
            completion_tokens=0,
            status=None,
            error_code=None,
            duration_s=0.0,
        )


async def test_http_rules_are_the_embeddings_ones(tiny: Served) -> None:
    body = json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 1}).encode()
    plain = await tiny.http.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    assert plain.json()["error"]["code"] == "request_unsupported_media_type"
    deep = await tiny.http.post(
        "/v1/completions",
        content=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert (deep.status_code, deep.json()["error"]["code"]) == (400, "request_invalid")
    assert "nests JSON too deeply" in deep.json()["error"]["message"]
    wrong = await tiny.http.get("/v1/chat/completions")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    huge = await tiny.http.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "z" * (5 * 1024 * 1024)},
    )
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "request_too_large")
    rid = await tiny.http.post(
        "/v1/chat/completions",
        content=body,
        headers={"Content-Type": "application/json", "X-Request-ID": "chat-req-0001"},
    )
    assert rid.headers.get_list("x-request-id") == ["chat-req-0001"]
    for raw in (b'{"model": "%s", "prompt": "a", "temperature": NaN}', b'{"top_p": Infinity}'):
        nan = await tiny.http.post(
            "/v1/completions",
            content=raw.replace(b"%s", MODEL.encode()),
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 400
    outcomes = await tiny.settled(7)
    assert outcomes[4].request_id == "chat-req-0001"
    assert [o.status for o in outcomes] == [415, 400, 405, 413, 200, 400, 400]
    with pytest.raises(ValueError, match="max_body_bytes"):
        OpenAIGeneration({}, max_body_bytes=0)
    with pytest.raises(ValueError, match="timeout"):
        OpenAIGeneration({}, timeout=0)
    with pytest.raises(ValueError, match="non-empty"):
        OpenAIGeneration({"": tiny.engine})


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_hostile_bodies_never_give_a_5xx(tiny: Served, data: st.DataObject) -> None:
    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=10,
    )
    keys = st.sampled_from(
        [
            "model",
            "messages",
            "prompt",
            "temperature",
            "top_p",
            "top_k",
            "stop",
            "seed",
            "n",
            "stream",
            "stream_options",
            "logprobs",
            "top_logprobs",
            "echo",
            "max_completion_tokens",
        ]
    )
    body = data.draw(st.dictionaries(keys, json_values, max_size=6))
    if data.draw(st.booleans()):
        body["model"] = MODEL
    if data.draw(st.booleans()):
        body["messages"] = data.draw(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "system", "x"]), "content": json_values}
                ),
                max_size=3,
            )
        )
    # never None: the default (the whole context) would make valid examples slow
    body["max_tokens"] = data.draw(st.integers(-2, 3) | json_values.filter(lambda v: v is not None))
    route = data.draw(st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
    response = await tiny.http.post(route, json=body)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# -- load, shutdown, disconnects -----------------------------------------------------------------


async def test_a_client_that_disconnects_mid_stream_frees_its_blocks(
    model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(model) as tiny:
        pool = tiny.engine.num_blocks
        body = {
            "model": MODEL,
            "messages": HELLO,
            "stream": True,
            "temperature": 0,
            "max_tokens": CONTEXT - len(tiny.prompt_ids(HELLO)),
            "stop": ["never-generated-stop-string"],
        }
        with caplog.at_level(logging.WARNING):
            async with tiny.http.stream("POST", "/v1/chat/completions", json=body) as response:
                seen = 0
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        seen += 1
                    if seen == 3:
                        break
                assert tiny.engine.num_free_blocks < pool  # it holds blocks while it runs
            (outcome,) = await tiny.settled(1)
            for _ in range(500):
                if tiny.engine.num_free_blocks == pool and tiny.engine.num_running == 0:
                    break
                await asyncio.sleep(0.01)
            assert tiny.engine.num_free_blocks == pool
        assert (outcome.status, outcome.error_code) == (None, "CLIENT_DISCONNECTED")
        assert outcome.stream
        assert 1 <= outcome.completion_tokens < body["max_tokens"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # the engine serves on
        reply = await tiny.api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert reply.usage is not None


async def test_a_client_that_leaves_while_waiting_is_withdrawn(model: Any) -> None:
    async with served(model) as tiny:
        pool = tiny.engine.num_blocks
        body = {
            "model": MODEL,
            "messages": HELLO,
            "temperature": 0,
            "max_tokens": CONTEXT - len(tiny.prompt_ids(HELLO)),
            "stop": ["never-generated-stop-string"],
        }
        request = asyncio.ensure_future(tiny.http.post("/v1/chat/completions", json=body))
        for _ in range(500):
            if tiny.engine.num_running:
                break
            await asyncio.sleep(0.005)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        (outcome,) = await tiny.settled(1)
        assert (outcome.status, outcome.error_code) == (None, "CLIENT_DISCONNECTED")
        for _ in range(500):
            if tiny.engine.num_free_blocks == pool:
                break
            await asyncio.sleep(0.01)
        assert tiny.engine.num_free_blocks == pool


async def test_overloaded_is_429_with_retry_after_and_closed_is_503(model: Any) -> None:
    async with served(model, max_waiting=1, max_num_seqs=1) as tiny:
        long = SamplingParams(max_tokens=200, temperature=0, stop=("never-generated",))
        prompt = tiny.prompt_ids(HELLO)
        held = [tiny.engine.generate(prompt, long)]
        for _ in range(500):
            if tiny.engine.num_running == 1:
                break
            await asyncio.sleep(0.005)
        held.append(tiny.engine.generate(prompt, long))  # waits: the queue is full now
        response = await tiny.http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 1}
        )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "model_overloaded")
        for stream in held:
            stream.cancel()
        (outcome,) = await tiny.settled(1)
        assert (outcome.status, outcome.error_code) == (429, "MODEL_OVERLOADED")
    closed = GenerationEngine(model, EngineOptions(block_size=4, num_blocks=16))
    async with serve(OpenAIGeneration({MODEL: closed})) as http:
        response = await http.post(
            "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 1}
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"


async def test_mount_openai_serves_embeddings_and_generation_side_by_side(model: Any) -> None:
    from toy import CharAdapter

    async def host(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", CharAdapter(), policy=BatchPolicy(max_queue=4))
        async with GenerationEngine(model, EngineOptions(block_size=4, num_blocks=64)) as engine:
            app = mount_openai(host, runtime, generation={MODEL: engine})
            async with serve(app) as http:
                api = client_for(http)
                assert sorted(m.id for m in (await api.models.list()).data) == ["chars", MODEL]
                assert (await api.models.retrieve(MODEL)).id == MODEL
                assert (await api.models.retrieve("chars")).id == "chars"
                vectors = await api.embeddings.create(model="chars", input="abc")
                assert len(vectors.data) == 1
                chat = await api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
                assert chat.choices[0].finish_reason in ("stop", "length")
                assert (await http.get("/elsewhere")).status_code == 204
            alone = mount_openai(None, None, generation={MODEL: engine})
            async with serve(alone) as http:
                listing = (await http.get("/v1/models")).json()
                assert [m["id"] for m in listing["data"]] == [MODEL]
                assert (await http.get("/nowhere")).status_code == 404
    with pytest.raises(ValueError, match="needs a runtime"):
        mount_openai(None, None)


async def test_a_deadline_is_504_or_an_error_event_after_the_200(model: Any) -> None:
    outcomes: list[GenerationOutcome] = []
    options = EngineOptions(block_size=4, num_blocks=160)
    async with GenerationEngine(model, options) as engine:
        app = OpenAIGeneration(
            {MODEL: engine},
            timeout=0.05,
            on_complete=lambda _scope, outcome: outcomes.append(outcome),
        )
        async with serve(app) as http:
            api = client_for(http)
            body: dict[str, Any] = {
                "model": MODEL,
                "messages": HELLO,
                "temperature": 0,
                "stop": ["never-generated-stop-string"],
            }
            with pytest.raises(openai.APIStatusError) as caught:
                await api.chat.completions.create(**body)
            assert caught.value.status_code == 504
            assert caught.value.code == "deadline_exceeded"
            stream = await api.chat.completions.create(**body, stream=True)
            with pytest.raises(openai.APIError, match="deadline") as failed:
                async for _chunk in stream:
                    pass
            assert not isinstance(failed.value, openai.APIStatusError)  # after the 200
            for _ in range(500):
                if len(outcomes) == 2 and engine.num_free_blocks == engine.num_blocks:
                    break
                await asyncio.sleep(0.01)
            assert engine.num_free_blocks == engine.num_blocks
    assert [(o.status, o.error_code, o.stream) for o in outcomes] == [
        (504, "DEADLINE_EXCEEDED", False),
        (200, "DEADLINE_EXCEEDED", True),
    ]
    assert not outcomes[1].ok


async def test_chat_template_refusals_and_a_model_without_one_are_400s() -> None:
    strict = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('start with a user') }}"
        "{% endif %}"
    )
    base = byte_tokenizer().backend
    chat_models = {
        "strict": tiny_model(
            GenerationTokenizer(base, eos_token_ids=[257], chat_template=strict + CHATML)
        ),
        "plain": tiny_model(GenerationTokenizer(base, eos_token_ids=[257])),
    }
    options = EngineOptions(block_size=4, num_blocks=64)
    async with (
        GenerationEngine(chat_models["strict"], options) as strict_engine,
        GenerationEngine(chat_models["plain"], options) as plain_engine,
    ):
        app = OpenAIGeneration({"strict": strict_engine, "plain": plain_engine})
        async with serve(app) as http:
            api = client_for(http)
            with pytest.raises(openai.BadRequestError) as caught:
                await api.chat.completions.create(
                    model="strict", messages=[{"role": "assistant", "content": "hi"}]
                )
            assert caught.value.param == "messages"
            assert "start with a user" in caught.value.message
            fine = await api.chat.completions.create(model="strict", messages=HELLO, max_tokens=1)
            assert fine.usage is not None
            with pytest.raises(openai.BadRequestError) as caught:
                await api.chat.completions.create(model="plain", messages=HELLO)
            assert caught.value.param == "model"
            assert "no chat template" in caught.value.message
            text = await api.completions.create(model="plain", prompt="abc", max_tokens=1)
            assert text.usage is not None


async def test_a_kv_cache_smaller_than_the_context_bounds_it(model: Any) -> None:
    options = EngineOptions(block_size=4, num_blocks=16)  # 64 tokens, the model's context 256
    async with GenerationEngine(model, options) as engine:
        app = OpenAIGeneration({MODEL: engine})
        async with serve(app) as http:
            api = client_for(http)
            reply = await api.chat.completions.create(
                model=MODEL, messages=HELLO, temperature=0, stop=["never-generated-stop"]
            )  # no max_tokens: up to what the cache holds
            assert reply.usage is not None
            assert reply.usage.total_tokens == 64
            assert reply.choices[0].finish_reason == "length"
            with pytest.raises(openai.BadRequestError) as caught:
                await api.completions.create(model=MODEL, prompt="p" * 64)
            assert caught.value.code == "context_length_exceeded"
            assert "maximum context length is 64 tokens" in caught.value.message


async def test_smollm2_answers_through_the_openai_client(smollm2: GenerationModel) -> None:
    """The real SmolLM2-135M-Instruct, greedy, as in the issue: non-streaming and streamed."""
    question = [
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
    ]
    name = "SmolLM2-135M-Instruct"
    async with GenerationEngine(smollm2, EngineOptions(kv_cache_bytes=32 * 2**20)) as engine:
        app = OpenAIGeneration({name: engine})
        async with serve(app) as http:
            api = client_for(http)
            reply = await api.chat.completions.create(
                model=name, messages=question, temperature=0, max_tokens=32
            )
            assert reply.choices[0].message.content == "The capital of France is Paris."
            assert reply.choices[0].finish_reason == "stop"
            stream = await api.chat.completions.create(
                model=name, messages=question, temperature=0, max_tokens=32, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert text == "The capital of France is Paris."
            for _ in range(500):
                if engine.num_free_blocks == engine.num_blocks:
                    break
                await asyncio.sleep(0.01)
            assert engine.num_free_blocks == engine.num_blocks
