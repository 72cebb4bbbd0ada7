"""OpenAI-compatible embeddings over a real uvicorn server, with httpx as the client."""

from __future__ import annotations

import asyncio
import base64
import json
import threading

import numpy as np
import pytest
from http_kit import serve
from toy import CharAdapter, reference, wait_started

from aiaas_serving import (
    BatchPolicy,
    EmbeddingsOutcome,
    OpenAIEmbeddings,
    Runtime,
    mount_openai,
)


def chars(text: str) -> list[int]:
    return [ord(c) % 64 for c in text]


async def test_minilm_embeddings_as_floats_and_base64(minilm) -> None:
    texts = ["The quick brown fox.", "hello world", "A third, somewhat longer sentence here."]
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("all-MiniLM-L6-v2", minilm)
        async with serve(OpenAIEmbeddings(runtime)) as client:
            response = await client.post(
                "/v1/embeddings",
                json={"model": "all-MiniLM-L6-v2", "input": texts},
                headers={"X-Request-ID": "req-embed-0001"},
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"] == "req-embed-0001"
            body = response.json()
            assert body["object"] == "list"
            assert body["model"] == "all-MiniLM-L6-v2"
            assert [d["index"] for d in body["data"]] == [0, 1, 2]
            assert all(d["object"] == "embedding" for d in body["data"])
            tokens = sum(len(minilm.tokenize(t)) for t in texts)
            assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
            floats = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
            assert floats.shape == (3, 384)
            direct = [await runtime.submit("all-MiniLM-L6-v2", t) for t in texts]
            np.testing.assert_allclose(floats, np.stack(direct), atol=1e-6)

            encoded = await client.post(
                "/v1/embeddings",
                json={"model": "all-MiniLM-L6-v2", "input": texts[1], "encoding_format": "base64"},
            )
            assert encoded.status_code == 200
            (item,) = encoded.json()["data"]
            decoded = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            np.testing.assert_allclose(decoded, floats[1], atol=1e-6)
            assert len(encoded.headers["x-request-id"]) == 32  # none sent: a fresh one


@pytest.fixture
async def char_server():
    gate = threading.Event()
    gate.set()
    adapter = CharAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter, policy=BatchPolicy(max_queue=1))
        app = OpenAIEmbeddings(runtime, models={"text-chars": "chars"}, max_body_bytes=2048)
        async with serve(app) as client:
            yield client, runtime, adapter, gate


async def test_lists_usage_and_the_model_catalogue(char_server) -> None:
    client, _runtime, _adapter, _gate = char_server
    response = await client.post("/v1/embeddings", json={"model": "text-chars", "input": ["ab"]})
    assert response.status_code == 200
    body = response.json()
    assert body["data"][0]["embedding"] == reference(chars("ab"))
    assert body["usage"]["prompt_tokens"] == 2
    ok = await client.post(
        "/v1/embeddings", json={"model": "text-chars", "input": "abc", "dimensions": 4}
    )
    assert ok.status_code == 200
    models = await client.get("/v1/models")
    assert models.json() == {
        "object": "list",
        "data": [{"id": "text-chars", "object": "model", "created": 0, "owned_by": "aiaas"}],
    }
    card = await client.get("/v1/models/text-chars")
    assert card.json()["id"] == "text-chars"
    head = await client.head("/v1/models")
    assert head.status_code == 200
    assert head.content == b""


@pytest.mark.parametrize(
    ("payload", "status", "param", "code"),
    [
        (b"{not json", 400, None, "request_invalid"),
        (b"[1, 2]", 400, None, "request_invalid"),
        ({"input": "x"}, 400, "model", "request_invalid"),
        ({"model": "text-chars"}, 400, "input", "request_invalid"),
        ({"model": "gpt-4", "input": "x"}, 404, "model", "model_not_found"),
        ({"model": "text-chars", "input": [[1, 2], [3]]}, 400, "input", "request_invalid"),
        ({"model": "text-chars", "input": [1, 2]}, 400, "input", "request_invalid"),
        ({"model": "text-chars", "input": []}, 400, "input", "request_invalid"),
        ({"model": "text-chars", "input": ["ok", ""]}, 400, "input", "request_invalid"),
        ({"model": "text-chars", "input": ["ok", 3]}, 400, "input", "request_invalid"),
        ({"model": "text-chars", "input": {"a": 1}}, 400, "input", "request_invalid"),
        (
            {"model": "text-chars", "input": "x", "encoding_format": "int8"},
            400,
            "encoding_format",
            "request_invalid",
        ),
        (
            {"model": "text-chars", "input": "x", "dimensions": 8},
            400,
            "dimensions",
            "request_invalid",
        ),
        ({"model": "text-chars", "input": "x" * 65}, 413, None, "input_too_large"),
        ({"model": "text-chars", "input": "x" * 3000}, 413, None, "request_too_large"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(char_server, payload, status, param, code):
    client, _runtime, adapter, _gate = char_server
    if isinstance(payload, bytes):
        response = await client.post(
            "/v1/embeddings", content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post("/v1/embeddings", json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] == code
    assert error["message"]
    assert adapter.batches == []  # refused before any compute


async def test_too_many_inputs_and_wrong_methods(char_server) -> None:
    client, _runtime, _adapter, _gate = char_server
    many = await client.post("/v1/embeddings", json={"model": "text-chars", "input": ["a"] * 2049})
    assert many.status_code == 413  # the body limit of this app (2 KiB) comes first
    wrong = await client.get("/v1/embeddings")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    post_models = await client.post("/v1/models")
    assert post_models.status_code == 405
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404
    elsewhere = await client.get("/v2/anything")
    assert elsewhere.status_code == 404
    assert elsewhere.json()["error"]["code"] == "route_not_found"


async def test_an_overloaded_model_answers_429_with_retry_after(char_server) -> None:
    client, runtime, adapter, gate = char_server
    gate.clear()
    payload = {"model": "text-chars", "input": "abc"}
    running = asyncio.ensure_future(client.post("/v1/embeddings", json=payload))
    await wait_started(adapter)
    queued = asyncio.ensure_future(client.post("/v1/embeddings", json=payload))
    for _ in range(1000):  # the second request reaches the queue over the socket
        if runtime.model_info("chars").queued:
            break
        await asyncio.sleep(0.005)
    refused = await client.post("/v1/embeddings", json=payload)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "model_overloaded"
    gate.set()
    assert (await running).status_code == 200
    assert (await queued).status_code == 200


async def test_mounting_keeps_the_host_apps_routes_and_lifespan(minilm) -> None:
    events: list[str] = []

    async def host(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"host says hi"})

    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", CharAdapter())
        async with serve(mount_openai(host, runtime, timeout=5.0)) as client:
            assert (await client.get("/")).text == "host says hi"
            assert (await client.get("/v1/other")).text == "host says hi"
            response = await client.post("/v1/embeddings", json={"model": "chars", "input": "a"})
            assert response.status_code == 200
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert mount_openai(None, runtime).__class__ is OpenAIEmbeddings


async def test_a_client_that_disconnects_has_its_requests_withdrawn() -> None:
    gate = threading.Event()
    adapter = CharAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter)
        app = OpenAIEmbeddings(runtime)
        blocker = runtime.enqueue("chars", "x")
        await wait_started(adapter)
        body = json.dumps({"model": "chars", "input": ["abc", "de"]}).encode()
        messages = [
            {"type": "http.request", "body": body, "more_body": False},
            {"type": "http.disconnect"},
        ]
        sent: list[dict] = []

        async def receive():
            if len(messages) == 1:
                await asyncio.sleep(0.01)  # the client leaves while its requests wait
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/embeddings",
            "headers": [(b"content-type", b"application/json")],
        }
        await app(scope, receive, send)
        assert sent == []  # nobody to answer
        gate.set()
        await blocker
        counter = runtime.metrics.counter
        assert counter("aiaas_serving_requests_total", model="chars", outcome="cancelled") == 2
        assert adapter.batches == [(1, 1)]

        async def gone():
            return {"type": "http.disconnect"}

        await app(scope, gone, send)  # left before sending a body: nothing to do
        assert sent == []


async def test_model_failures_are_500_server_errors_without_internals() -> None:
    class Broken(CharAdapter):
        def forward(self, batch):
            raise RuntimeError("secret internal detail")

    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("broken", Broken())
        async with serve(OpenAIEmbeddings(runtime, models=["broken"])) as client:
            response = await client.post("/v1/embeddings", json={"model": "broken", "input": "a"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "model_error"
    assert "secret" not in response.text


def test_endpoint_options_are_validated() -> None:
    runtime = Runtime(device="cpu")
    with pytest.raises(ValueError, match="max_body_bytes"):
        OpenAIEmbeddings(runtime, max_body_bytes=0)
    with pytest.raises(ValueError, match="timeout"):
        OpenAIEmbeddings(runtime, timeout=0)


async def test_on_complete_reports_each_embeddings_call_once() -> None:
    outcomes: list[tuple[str, EmbeddingsOutcome]] = []

    def record(scope, outcome: EmbeddingsOutcome) -> None:
        outcomes.append((scope["path"], outcome))

    gate = threading.Event()
    gate.set()
    adapter = CharAdapter(gate=gate)
    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter, policy=BatchPolicy(max_queue=1))
        app = OpenAIEmbeddings(runtime, models={"text-chars": "chars"}, on_complete=record)
        async with serve(app) as client:
            ok = await client.post(
                "/v1/embeddings",
                json={"model": "text-chars", "input": ["abcde"]},
                headers={"X-Request-ID": "req-usage-0001"},
            )
            assert ok.status_code == 200
            bad = await client.post("/v1/embeddings", json={"model": "gpt-4", "input": "x"})
            assert bad.status_code == 404
            garbled = await client.post(
                "/v1/embeddings", content=b"{", headers={"content-type": "application/json"}
            )
            assert garbled.status_code == 400
            assert (await client.get("/v1/models")).status_code == 200  # not an embeddings call
            gate.clear()
            payload = {"model": "text-chars", "input": "abc"}
            running = asyncio.ensure_future(client.post("/v1/embeddings", json=payload))
            await wait_started(adapter)
            queued = asyncio.ensure_future(client.post("/v1/embeddings", json=payload))
            for _ in range(1000):
                if runtime.model_info("chars").queued:
                    break
                await asyncio.sleep(0.005)
            refused = await client.post("/v1/embeddings", json=payload)
            assert refused.status_code == 429
            gate.set()
            assert (await running).status_code == 200
            assert (await queued).status_code == 200
    assert all(path == "/v1/embeddings" for path, _ in outcomes)
    got = [o for _, o in outcomes]
    assert len(got) == 6
    first = got[0]
    assert first.request_id == "req-usage-0001"
    assert (first.model, first.inputs, first.prompt_tokens, first.status) == (
        "text-chars",
        1,
        5,
        200,
    )
    assert first.error_code is None
    assert first.ok
    assert first.duration_s >= 0
    assert (got[1].model, got[1].status, got[1].error_code) == ("gpt-4", 404, "MODEL_NOT_FOUND")
    assert got[1].prompt_tokens == 0
    assert not got[1].ok
    assert (got[2].model, got[2].status, got[2].error_code) == (None, 400, "REQUEST_INVALID")
    statuses = sorted(o.status for o in got[3:])
    assert statuses == [200, 200, 429]
    (limited,) = [o for o in got[3:] if o.status == 429]
    assert limited.error_code == "MODEL_OVERLOADED"


async def test_on_complete_sees_a_client_that_left_and_its_errors_stay_private(caplog) -> None:
    gate = threading.Event()
    adapter = CharAdapter(gate=gate)
    seen: list[EmbeddingsOutcome] = []

    def explode(scope, outcome: EmbeddingsOutcome) -> None:
        seen.append(outcome)
        raise RuntimeError("usage sink is broken")

    async with Runtime(device="cpu") as runtime:
        await runtime.add_model("chars", adapter)
        app = OpenAIEmbeddings(runtime, on_complete=explode)
        blocker = runtime.enqueue("chars", "x")
        await wait_started(adapter)
        body = json.dumps({"model": "chars", "input": ["abc"]}).encode()
        messages = [
            {"type": "http.request", "body": body, "more_body": False},
            {"type": "http.disconnect"},
        ]

        async def receive():
            if len(messages) == 1:
                await asyncio.sleep(0.01)
            return messages.pop(0)

        async def send(message):
            raise AssertionError("nobody is there to answer")

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/embeddings",
            "headers": [(b"content-type", b"application/json")],
        }
        with caplog.at_level("ERROR", logger="aiaas_serving"):
            await app(scope, receive, send)
        gate.set()
        await blocker
    (left,) = seen
    assert (left.model, left.inputs, left.prompt_tokens) == ("chars", 1, 3)
    assert left.status is None
    assert left.error_code == "CLIENT_DISCONNECTED"
    assert "on_complete failed" in caplog.text


def test_outcomes_refuse_negative_counts() -> None:
    with pytest.raises(ValueError, match="prompt_tokens"):
        EmbeddingsOutcome(
            request_id="r",
            model="m",
            inputs=1,
            prompt_tokens=-1,
            status=200,
            error_code=None,
            duration_s=0.0,
        )
