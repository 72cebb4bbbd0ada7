"""The OpenAI endpoint's request rules (issue 17): request id, content type, body and input bounds,
over-length input, tokenising off the event loop and admission of full-size requests; over a real
uvicorn server with httpx, the official ``openai`` client, and the real MiniLM model."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import openai
import pytest
from http_kit import serve
from toy import CharAdapter, ToyAdapter, wait_started

from aiaas_core import RateLimitedError, request_context
from aiaas_serving import (
    BatchPolicy,
    EmbeddingsOutcome,
    InputTooLarge,
    InvalidInput,
    OpenAIEmbeddings,
    Overloaded,
    Runtime,
    SentenceEmbeddingAdapter,
    TextInput,
    mount_openai,
    openai_error_response,
)

LONG_TEXT = "word " * 600  # about 600 tokens: beyond MiniLM's 256


@pytest.fixture
async def chars():
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", CharAdapter(), policy=BatchPolicy(max_queue=4))
        app = OpenAIEmbeddings(runtime, max_input_chars=40, max_request_chars=100)
        async with serve(app) as client:
            yield client


async def test_the_request_context_id_is_used_and_no_second_header_is_sent() -> None:
    seen: list[EmbeddingsOutcome] = []
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", CharAdapter())
        app = OpenAIEmbeddings(runtime, on_complete=lambda _scope, outcome: seen.append(outcome))
        body = json.dumps({"model": "chars", "input": "abc"}).encode()
        sent: list[dict[str, Any]] = []
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls % 2 == 0:  # after the body: the client waits (no disconnect)
                await asyncio.Event().wait()
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/embeddings",
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-request-id", b"client-sent-0001"),
            ],
        }
        with request_context("middleware-0001"):  # what TelemetryMiddleware sets
            await app(scope, receive, send)
        assert sent[0]["status"] == 200
        assert b"x-request-id" not in dict(sent[0]["headers"])  # the middleware sends it
        assert seen[0].request_id == "middleware-0001"

        sent.clear()
        await app(scope, receive, send)  # no middleware: the endpoint takes the client's id
        assert dict(sent[0]["headers"])[b"x-request-id"] == b"client-sent-0001"
        assert seen[1].request_id == "client-sent-0001"


async def test_a_post_must_say_its_body_is_json(chars) -> None:
    body = json.dumps({"model": "chars", "input": "abc"}).encode()

    async def post(content_type: str | None) -> httpx.Response:
        headers = {} if content_type is None else {"Content-Type": content_type}
        return await chars.post("/v1/embeddings", content=body, headers=headers)

    for refused, says in (
        (None, "no Content-Type"),
        ("text/plain", "'text/plain' is not JSON"),
        ("application/xml", "'application/xml' is not JSON"),
        ("", "'(empty)' is not JSON"),
        ("application/json; charset=latin-1", "must be utf-8, not 'latin-1'"),
    ):
        response = await post(refused)
        assert response.status_code == 415, refused
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "request_unsupported_media_type",
            None,
        )
        assert says in error["message"]
        assert "Content-Type: application/json" in error["message"]
    for accepted in (
        "application/json",
        "application/json;charset=utf-8",
        'application/json; charset="UTF-8"',
        "application/problem+json",
        "APPLICATION/JSON",
    ):
        assert (await post(accepted)).status_code == 200, accepted
    assert (await chars.get("/v1/models")).status_code == 200  # no body: not checked


async def test_hostile_json_is_a_400_never_a_500(chars) -> None:
    headers = {"Content-Type": "application/json"}
    for body in (
        b'{"model": "chars", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000,
        b'{"model": "chars", "input": ' + b"9" * 5000 + b"}",  # past int's digit limit
        b"\xff\xfe{}",
    ):
        response = await chars.post("/v1/embeddings", content=body, headers=headers)
        assert response.status_code == 400, body[:40]
        assert response.json()["error"]["code"] == "request_invalid"
    deep = await chars.post(
        "/v1/embeddings", content=b"[" * 100_000 + b"]" * 100_000, headers=headers
    )
    assert "nests JSON too deeply" in deep.json()["error"]["message"]


async def test_inputs_are_bounded_in_characters_before_tokenising(chars) -> None:
    one = await chars.post("/v1/embeddings", json={"model": "chars", "input": "a" * 41})
    assert one.status_code == 413
    error = one.json()["error"]
    assert (error["code"], error["param"]) == ("input_too_large", "input")
    assert error["message"].startswith("'input' is 41 characters long; at most 40 characters")
    listed = await chars.post("/v1/embeddings", json={"model": "chars", "input": ["ok", "b" * 41]})
    assert "input[1] is 41 characters long" in listed.json()["error"]["message"]
    total = await chars.post("/v1/embeddings", json={"model": "chars", "input": ["c" * 40] * 3})
    assert total.status_code == 413
    assert "hold 120 characters together; at most 100" in total.json()["error"]["message"]
    fits = await chars.post("/v1/embeddings", json={"model": "chars", "input": ["d" * 40] * 2})
    assert fits.status_code == 200
    with pytest.raises(ValueError, match="max_input_chars"):
        OpenAIEmbeddings(Runtime(device="cpu"), max_input_chars=0)


async def test_truncation_only_when_asked_for(chars) -> None:
    refused = await chars.post(
        "/v1/embeddings", json={"model": "chars", "input": "x", "truncate": True}
    )
    assert refused.status_code == 400  # this adapter cannot truncate
    assert refused.json()["error"]["param"] == "truncate"
    assert "not supported for model 'chars'" in refused.json()["error"]["message"]
    bad = await chars.post("/v1/embeddings", json={"model": "chars", "input": "x", "truncate": 1})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "truncate")
    plain = await chars.post(
        "/v1/embeddings", json={"model": "chars", "input": "y", "truncate": False}
    )
    assert plain.status_code == 200


async def test_over_length_input_gets_openais_refusal_and_truncation_on_request(minilm) -> None:
    full = len(minilm.tokenizer.encode(LONG_TEXT).ids)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("all-MiniLM-L6-v2", minilm)
        async with serve(OpenAIEmbeddings(runtime)) as client:
            api = openai.AsyncOpenAI(
                api_key="unused",
                base_url=f"{str(client.base_url).rstrip('/')}/v1",
                max_retries=0,
                http_client=client,
            )
            with pytest.raises(openai.BadRequestError) as caught:
                await api.embeddings.create(model="all-MiniLM-L6-v2", input=LONG_TEXT)
            err = caught.value
            assert (err.code, err.param) == ("context_length_exceeded", "input")
            assert err.message == (  # what the client shows: our message
                f"Error code: 400 - This model's maximum context length is 256 tokens, however"
                f" you requested {full} tokens. Please reduce your input, or send"
                ' "truncate": true to embed its first 256 tokens.'
            )
            with pytest.raises(openai.BadRequestError, match=r"tokens in input\[2\]"):
                await api.embeddings.create(model="all-MiniLM-L6-v2", input=["a", "b", LONG_TEXT])
            cut = await api.embeddings.create(
                model="all-MiniLM-L6-v2",
                input=["short text", LONG_TEXT],
                extra_body={"truncate": True},
            )
            short = len(minilm.tokenizer.encode("short text").ids)
            assert cut.usage.prompt_tokens == short + 256  # the tokens actually used
            fine = await api.embeddings.create(
                model="all-MiniLM-L6-v2", input="short text", extra_body={"truncate": False}
            )
            assert fine.usage.prompt_tokens == short


def test_text_inputs_truncate_like_the_tokenizer_or_refuse(minilm, minilm_dir) -> None:
    truncating = SentenceEmbeddingAdapter.from_directory(minilm_dir)  # truncates plain strings
    cut = truncating.prepare(LONG_TEXT)
    assert len(cut) == 256
    assert minilm.prepare(TextInput(LONG_TEXT, truncate=True)) == cut
    assert truncating.tokenize(LONG_TEXT) == cut
    strict = SentenceEmbeddingAdapter.from_directory(minilm_dir, truncate=False)
    with pytest.raises(InputTooLarge) as caught:
        strict.prepare(LONG_TEXT)
    assert (caught.value.tokens, caught.value.limit) == (
        len(minilm.tokenizer.encode(LONG_TEXT).ids),
        256,
    )
    with pytest.raises(InputTooLarge):  # a TextInput says for itself, whatever the adapter
        truncating.prepare(TextInput(LONG_TEXT))
    assert strict.prepare(TextInput(LONG_TEXT, truncate=True)) == cut
    assert strict.prepare(TextInput("short")) == strict.prepare("short")
    with pytest.raises(TypeError, match="must be a string"):
        TextInput(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        strict.prepare(42)  # type: ignore[arg-type]


class HeldChars(CharAdapter):
    """Chars whose ``prepare`` waits for a gate (and notes the thread it ran on)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self.threads: set[int] = set()

    def prepare(self, inputs: Any) -> list[int]:
        self.threads.add(threading.get_ident())
        self.entered.set()
        assert self.hold.wait(10), "the test never released prepare"
        return super().prepare(inputs)


async def test_tokenising_runs_off_the_event_loop_so_health_keeps_answering() -> None:
    async def health(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    adapter = HeldChars()
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter)
        async with serve(mount_openai(health, runtime)) as client:
            adapter.hold.clear()
            request = asyncio.ensure_future(
                client.post(  # 1,008 characters: tokenised in a worker thread
                    "/v1/embeddings", json={"model": "chars", "input": ["a" * 63] * 16}
                )
            )
            assert await asyncio.to_thread(adapter.entered.wait, 10)
            probe = await client.get("/health")  # answered while the input is being prepared
            assert (probe.status_code, probe.text) == (200, "ok")
            assert not request.done()
            adapter.hold.set()
            assert (await request).status_code == 200
    assert threading.get_ident() not in adapter.threads
    assert len(adapter.threads) == 1  # one worker thread prepared all 16 inputs


async def test_a_request_larger_than_the_queue_is_served_when_the_model_is_idle() -> None:
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", CharAdapter(), policy=BatchPolicy(max_queue=4))
        async with serve(OpenAIEmbeddings(runtime, max_inputs=16)) as client:
            api = openai.AsyncOpenAI(
                api_key="unused",
                base_url=f"{str(client.base_url).rstrip('/')}/v1",
                max_retries=0,
                http_client=client,
            )
            texts = [f"t{i}" for i in range(16)]
            answer = await api.embeddings.create(model="chars", input=texts)
            assert len(answer.data) == 16  # 16 inputs through a queue of 4: admitted when idle
            with pytest.raises(openai.BadRequestError) as caught:  # never servable: 400
                await api.embeddings.create(model="chars", input=[*texts, "one more"])
            assert caught.value.param == "input"
            assert "at most 16 are accepted per request" in caught.value.message


async def test_admission_of_groups_and_preparing_in_a_worker_thread() -> None:
    gate = threading.Event()
    adapter = ToyAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("toy", adapter, policy=BatchPolicy(max_queue=2, max_batch_size=1))
        handles = await runtime.aenqueue_many("toy", [[1]] * 5)  # idle: any group is admitted
        await wait_started(adapter)
        queued = runtime.model_info("toy").queued
        assert queued >= 1
        with pytest.raises(Overloaded):  # not idle: the group must fit beside the queue
            await runtime.aenqueue_many("toy", [[1]] * 2)
        with pytest.raises(Overloaded):
            runtime.enqueue_many("toy", [[1]] * 2)
        gate.set()
        assert len([await h for h in handles]) == 5

        with pytest.raises(InvalidInput) as invalid:
            await runtime.aenqueue_many("toy", [[1], [2], "not tokens"])
        assert invalid.value.index == 2
        with pytest.raises(InvalidInput) as converted:  # a ValueError from prepare
            await runtime.aenqueue_many("toy", [[1], [99]])
        assert (converted.value.index, converted.value.model) == (1, "toy")
        with pytest.raises(InputTooLarge) as too_long:
            runtime.enqueue_many("toy", [[1], [2] * 65])
        assert too_long.value.index == 1


async def test_a_queue_that_filled_while_preparing_refuses_the_group() -> None:
    adapter = HeldChars()
    gate = threading.Event()
    adapter.gate = gate
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter, policy=BatchPolicy(max_queue=2))
        running = runtime.enqueue("chars", "a")  # prepared on the loop: not held
        await wait_started(adapter)
        adapter.hold.clear()
        adapter.entered.clear()
        group = asyncio.ensure_future(runtime.aenqueue_many("chars", ["b", "c"]))
        assert await asyncio.to_thread(adapter.entered.wait, 10)
        adapter.hold.set()  # the next prepare (on the loop) passes straight through
        filler = runtime.enqueue("chars", "d")  # the queue fills meanwhile
        with pytest.raises(Overloaded):
            await group
        gate.set()
        await running
        await filler


def test_openai_error_response_renders_any_error_safely() -> None:
    status, headers, body = openai_error_response(RateLimitedError("slow down", retry_after=2.5))
    assert status == 429
    assert dict(headers) == {
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        b"retry-after": b"3",
    }
    assert json.loads(body) == {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limited",
        }
    }
    status, _, body = openai_error_response(RuntimeError("secret internals"))
    assert status == 500
    assert b"secret" not in body
    assert json.loads(body)["error"]["type"] == "server_error"
