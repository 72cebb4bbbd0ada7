"""What real clients need from the /v1 API (issue 17), against the whole service under uvicorn:
the official ``openai`` client, httpx and raw sockets, the real MiniLM model and PostgreSQL.

One request id per request; over-length input refused unless truncation is asked for; inputs
bounded and tokenised off the event loop; full-size requests admitted; hostile bodies and
content types refused with 4xx; clients that leave counted as such; every /v1 error in OpenAI's
shape.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import psycopg
import pytest
from conftest import LogCapture, Platform, make_service, serve
from inference_service._cli import banner
from test_service import add_key, bearer, metric, usage_rows

from aiaas_serving import TextInput

MODEL = "all-MiniLM-L6-v2"
LONG_TEXT = "word " * 2000  # about 2,000 tokens: far beyond MiniLM's 256


def openai_client(client: httpx.AsyncClient, token: str) -> openai.AsyncOpenAI:
    """The official client on the test's httpx client (closed with it, by ``serve``)."""
    return openai.AsyncOpenAI(
        api_key=token,
        base_url=f"{str(client.base_url).rstrip('/')}/v1",
        max_retries=0,
        http_client=client,
    )


def errors_logged(log_stream: LogCapture) -> list[dict[str, Any]]:
    return [r for r in log_stream.records() if r.get("level") in {"error", "critical"}]


async def test_one_request_id_per_request_in_headers_usage_and_access_log(
    platform: Platform, telemetry: Any, minilm: Any, log_stream: LogCapture
) -> None:
    service = make_service(
        platform.database(), telemetry, minilm, INFERENCE_SERVICE_RATE_LIMITS_PRO="key_rpm=2"
    )
    key = add_key(platform, roles=["developer"], scopes=[])
    async with serve(service) as client:
        ok = await client.post(
            "/v1/embeddings", json={"model": MODEL, "input": "hello"}, headers=bearer(key)
        )
        unknown = await client.post(
            "/v1/embeddings", json={"model": "gpt-4", "input": "hello"}, headers=bearer(key)
        )
        limited = await client.post(
            "/v1/embeddings", json={"model": MODEL, "input": "hello"}, headers=bearer(key)
        )
        assert await service.usage.flush(10)
    assert [r.status_code for r in (ok, unknown, limited)] == [200, 404, 429]
    ids = []
    for response in (ok, unknown, limited):
        (rid,) = response.headers.get_list("x-request-id")  # exactly one header
        ids.append(rid)
    assert len(set(ids)) == 3
    rows = {row[0]: row for row in usage_rows(platform, ids)}
    assert set(rows) == set(ids)  # each usage event carries the id the client saw
    assert [rows[rid][5] for rid in ids] == ["success", "error", "rate_limited"]
    access = {
        r["request_id"]: r["http.status_code"]
        for r in log_stream.records()
        if r.get("logger") == "aiaas.access"
    }
    assert [access[rid] for rid in ids] == [200, 404, 429]  # the access log's ids are the same


async def test_over_length_input_is_refused_unless_truncation_is_asked_for(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    full = len(minilm.tokenizer.encode(LONG_TEXT).ids)
    assert full > 1000
    refused_id, cut_id = f"too-long-{uuid.uuid4().hex}", f"cut-{uuid.uuid4().hex}"
    async with serve(service) as client:
        api = openai_client(client, platform.token)
        with pytest.raises(openai.BadRequestError) as caught:
            await api.embeddings.create(
                model=MODEL, input=LONG_TEXT, extra_headers={"X-Request-ID": refused_id}
            )
        err = caught.value
        assert err.status_code == 400
        assert (err.code, err.param, err.type) == (
            "context_length_exceeded",
            "input",
            "invalid_request_error",
        )
        assert (
            f"This model's maximum context length is 256 tokens, however you requested {full} "
            "tokens" in err.message
        )
        assert "Please reduce your input" in err.message
        with pytest.raises(openai.BadRequestError, match=r"in input\[1\]"):
            await api.embeddings.create(model=MODEL, input=["short", LONG_TEXT])

        cut = await api.embeddings.create(
            model=MODEL,
            input=LONG_TEXT,
            extra_body={"truncate": True},
            extra_headers={"X-Request-ID": cut_id},
        )
        assert cut.usage.prompt_tokens == cut.usage.total_tokens == 256  # the tokens used
        expected = await service.runtime.submit("embedder", TextInput(LONG_TEXT, truncate=True))
        assert cut.data[0].embedding == pytest.approx(expected.tolist(), abs=1e-5)
        not_bool = await client.post(
            "/v1/embeddings",
            json={"model": MODEL, "input": "x", "truncate": "yes"},
            headers=bearer(platform.token),
        )
        assert not_bool.status_code == 400
        assert not_bool.json()["error"]["param"] == "truncate"
        assert await service.usage.flush(10)
    rows = {row[0]: row for row in usage_rows(platform, [refused_id, cut_id])}
    assert rows[refused_id][4:7] == (0, "error", "CONTEXT_LENGTH_EXCEEDED")
    assert rows[cut_id][4:7] == (256, "success", None)


class HeldMiniLM:
    """MiniLM whose ``prepare`` first waits for a gate: while it is held, the event loop must
    keep answering (``prepare`` runs in a worker thread)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prepare(self, inputs: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self.inner.prepare(inputs)


async def test_inputs_are_bounded_and_tokenised_off_the_event_loop(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    held = HeldMiniLM(minilm)
    held.gate.set()  # loading and warming up the model pass straight through
    service = make_service(platform.database(), telemetry, held)
    big = "tokenise me " * 8000  # 96,000 characters: large, but within the 100,000 allowed
    async with serve(service) as client:
        too_long = await client.post(
            "/v1/embeddings",
            json={"model": MODEL, "input": ["ok", "x" * 100_001]},
            headers=bearer(platform.token),
        )
        assert too_long.status_code == 413
        error = too_long.json()["error"]
        assert (error["code"], error["param"]) == ("input_too_large", "input")
        assert "input[1] is 100001 characters long; at most 100000" in error["message"]
        too_much = await client.post(
            "/v1/embeddings",
            json={"model": MODEL, "input": ["y" * 90_000] * 12},
            headers=bearer(platform.token),
        )
        assert too_much.status_code == 413
        assert "at most 1000000 are accepted per request" in too_much.json()["error"]["message"]

        held.gate.clear()
        held.entered.clear()
        request = asyncio.ensure_future(
            client.post(
                "/v1/embeddings",
                json={"model": MODEL, "input": big, "truncate": True},
                headers=bearer(platform.token),
            )
        )
        assert await asyncio.to_thread(held.entered.wait, 30)  # tokenising has begun
        health = await client.get("/health")  # answered while the input is being tokenised
        assert health.status_code == 200
        assert not request.done()
        held.gate.set()
        response = await request
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] == 256


async def test_a_full_size_request_is_admitted_and_a_larger_one_is_a_400(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    assert service.settings.max_queue == 1024  # smaller than the 2,048 inputs a request may hold
    async with serve(service) as client:
        api = openai_client(client, platform.token)
        texts = [f"item {i}" for i in range(2048)]
        answer = await api.embeddings.create(model=MODEL, input=texts)
        assert [d.index for d in answer.data] == list(range(2048))
        with pytest.raises(openai.BadRequestError) as caught:  # can never be served: not a 429
            await api.embeddings.create(model=MODEL, input=[*texts, "one more"])
        assert caught.value.param == "input"
        assert "at most 2048 are accepted per request" in caught.value.message


async def test_hostile_bodies_and_content_types(
    platform: Platform, telemetry: Any, minilm: Any, log_stream: LogCapture
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    depth = 100_000
    nested = b'{"model": "%s", "input": ' % MODEL.encode() + b"[" * depth + b"]" * depth + b"}"
    body = json.dumps({"model": MODEL, "input": "hello"}).encode()
    auth = bearer(platform.token)
    async with serve(service) as client:
        deep = await client.post(
            "/v1/embeddings", content=nested, headers={**auth, "Content-Type": "application/json"}
        )
        assert deep.status_code == 400
        assert deep.json()["error"]["code"] == "request_invalid"
        assert "too deeply" in deep.json()["error"]["message"]

        async def post(content_type: str | None) -> httpx.Response:
            headers = dict(auth)
            if content_type is not None:
                headers["Content-Type"] = content_type
            return await client.post("/v1/embeddings", content=body, headers=headers)

        for refused in (
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
        ):
            response = await post(refused)
            assert response.status_code == 415, (refused, response.text)
            error = response.json()["error"]
            assert error["code"] == "request_unsupported_media_type"
            assert "application/json" in error["message"]
        for accepted in (
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/vnd.aiaas+json",
        ):
            assert (await post(accepted)).status_code == 200, accepted
        assert (await client.get("/v1/models", headers=auth)).status_code == 200  # no body
    assert errors_logged(log_stream) == []


async def test_clients_that_leave_are_counted_as_disconnects_not_errors(
    platform: Platform, telemetry: Any, minilm: Any, log_stream: LogCapture
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    mid_body, waiting = f"half-{uuid.uuid4().hex}", f"gone-{uuid.uuid4().hex}"
    full = json.dumps({"model": MODEL, "input": [f"text {i}" for i in range(2048)]}).encode()
    async with serve(service) as client:
        port = client.base_url.port
        assert port is not None

        def head(rid: str, length: int) -> bytes:
            return (
                f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {platform.token}\r\nContent-Type: application/json\r\n"
                f"X-Request-ID: {rid}\r\nContent-Length: {length}\r\n\r\n"
            ).encode()

        # half a body, then gone
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            await asyncio.to_thread(sock.sendall, head(mid_body, len(full)) + full[:500])
        # the whole body, then gone while its 2,048 inputs wait for the model
        model = service.runtime.model_info
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            await asyncio.to_thread(sock.sendall, head(waiting, len(full)) + full)
            for _ in range(3000):  # tokenising 2,048 inputs on a loaded machine: seconds
                if model("embedder").queued:
                    break
                await asyncio.sleep(0.01)
            assert model("embedder").queued  # admitted: waiting for the model when it leaves
        for _ in range(600):
            text = (await client.get("/metrics")).text
            try:
                gone = metric(
                    text,
                    "http_server_errors_total",
                    route="/v1/embeddings",
                    code="CLIENT_DISCONNECTED",
                )
            except AssertionError:
                gone = 0
            if gone == 2:
                break
            await asyncio.sleep(0.05)
        assert gone == 2
        with pytest.raises(AssertionError):  # no 5xx counted for them
            metric(text, "http_server_request_duration_seconds_count", status_class="5xx")
        with pytest.raises(AssertionError):
            metric(text, "http_server_errors_total", code="INTERNAL_ERROR")
        assert await service.usage.flush(10)
    assert errors_logged(log_stream) == []
    rows = {row[0]: row for row in usage_rows(platform, [mid_body, waiting])}
    assert {rid: rows[rid][5:7] for rid in rows} == {
        mid_body: ("error", "CLIENT_DISCONNECTED"),
        waiting: ("error", "CLIENT_DISCONNECTED"),
    }
    access = {
        r["request_id"]: r["http.status_code"]
        for r in log_stream.records()
        if r.get("logger") == "aiaas.access"
    }
    assert (access[mid_body], access[waiting]) == (499, 499)


async def test_every_v1_error_has_openais_shape_and_the_client_shows_it(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(platform.database(), telemetry, minilm)
    reader = add_key(platform, roles=["developer"], scopes=["models:read"])
    async with serve(service) as client:
        anonymous = openai_client(client, "unused")
        with pytest.raises(openai.AuthenticationError) as caught:  # no Authorization header
            await anonymous.embeddings.create(
                model=MODEL, input="hello", extra_headers={"Authorization": openai.omit}
            )
        assert "Authentication required" in caught.value.message
        assert caught.value.code == "auth_unauthenticated"
        assert caught.value.type == "authentication_error"
        assert caught.value.response.headers["www-authenticate"].startswith("Bearer")

        wrong = openai_client(client, platform.token[:-8] + "A" * 8)
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.models.list()
        assert caught.value.code in {"api_key_checksum", "api_key_invalid"}

        scoped = openai_client(client, reader)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await scoped.embeddings.create(model=MODEL, input="hello")
        assert caught.value.code == "auth_scope_denied"
        assert "embeddings:create" in caught.value.message

        api = openai_client(client, platform.token)
        with pytest.raises(openai.NotFoundError) as caught:
            await api.models.retrieve("gpt-4")
        assert caught.value.code == "model_not_found"

        unmapped = await client.delete("/v1/models", headers=bearer(platform.token))
        too_big = await asyncio.to_thread(
            _answer,
            client.base_url.port,
            (
                "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {platform.token}\r\nContent-Type: application/json\r\n"
                "Content-Length: 20000000\r\nConnection: close\r\n\r\n"
            ).encode(),
        )
    assert unmapped.status_code == 403
    assert unmapped.json()["error"]["code"] == "auth_route_unmapped"
    status, payload = too_big
    assert status == 413  # the telemetry middleware's size limit, refused before reading
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == "request_too_large"


def _answer(port: int | None, head: bytes) -> tuple[int, Any]:
    """Send ``head`` (no body) and read the whole answer: its status and JSON body."""
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    header, _, body = raw.partition(b"\r\n\r\n")
    return int(header.split(b" ", 2)[1]), json.loads(body)


CHAT = "SmolLM2-135M-Instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


async def test_chat_with_the_openai_client_streamed_or_not_billed_and_rate_limited(
    platform: Platform, telemetry: Any, minilm: Any, smollm2: Any, log_stream: LogCapture
) -> None:
    """One service start serving SmolLM2-135M-Instruct beside MiniLM (issue 14)."""
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        chat=smollm2,
        INFERENCE_SERVICE_RATE_LIMITS_PRO="key_tpm=200",
    )
    key = add_key(platform, roles=["developer"], scopes=["completions:create", "models:read"])
    embed_only = add_key(platform, roles=["developer"], scopes=["embeddings:create"])
    rid = {name: f"chat-{name}-{uuid.uuid4().hex}" for name in ("whole", "stream", "left")}
    async with serve(service) as client:
        api = openai_client(client, key)
        assert {m.id for m in (await api.models.list()).data} == {MODEL, CHAT}
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert '"kv_blocks_free"' in ready.text  # the chat engine's state in the model check
        raw = await api.chat.completions.with_raw_response.create(
            model=CHAT,
            messages=FRANCE,
            temperature=0,
            max_tokens=24,
            extra_headers={"X-Request-ID": rid["whole"]},
        )
        whole = raw.parse()
        assert whole.choices[0].message.content == "The capital of France is Paris."
        assert whole.choices[0].finish_reason == "stop"
        assert whole.usage is not None
        first_total = whole.usage.total_tokens
        remaining_before = int(raw.headers["x-ratelimit-remaining-tokens"])
        started = time.monotonic()

        stream = await api.chat.completions.with_raw_response.create(
            model=CHAT,
            messages=FRANCE,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Request-ID": rid["stream"]},
        )
        # the first request's tokens (prompt + completion) were charged to the key's bucket
        remaining_after = int(stream.headers["x-ratelimit-remaining-tokens"])
        refilled = math.ceil((time.monotonic() - started) * 200 / 60) + 1  # 200 a minute
        charged = remaining_before - remaining_after
        assert first_total - refilled <= charged <= first_total
        chunks = [chunk async for chunk in stream.parse()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "The capital of France is Paris."
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump() == whole.usage.model_dump()

        # a client that leaves mid-stream frees its KV blocks and is counted as a disconnect
        engine = service.chat_engine
        body = {
            "model": CHAT,
            "messages": FRANCE,
            "stream": True,
            "max_tokens": 400,
            "temperature": 1.0,
            "seed": 1,
            "stop": ["never-generated-stop-string"],
        }
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={**bearer(key), "X-Request-ID": rid["left"]},
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break
        for _ in range(1000):
            if engine.num_free_blocks == engine.num_blocks and engine.num_running == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.num_free_blocks == engine.num_blocks

        # the banner's chat lines (nox -s platform prints them) work as pasted
        local = SimpleNamespace(api_key=key, local=True, data_dir="/data", server="PostgreSQL")
        printed = banner(service.settings, local, port=client.base_url.port or 0, seconds=1.0)
        assert f"serving {MODEL} and {CHAT}" in printed
        lines = printed.splitlines()
        curl = next(line for line in lines if line.startswith("curl -sN "))
        snippet_at = [i for i, line in enumerate(lines) if line == "from openai import OpenAI"][1]
        snippet = "\n".join(lines[snippet_at : lines.index("print()", snippet_at) + 1])
        ran_curl = await asyncio.create_subprocess_exec(
            "bash", "-c", curl, stdout=asyncio.subprocess.PIPE
        )
        ran_snippet = await asyncio.create_subprocess_exec(
            sys.executable, "-c", snippet, stdout=asyncio.subprocess.PIPE
        )
        sse, _ = await ran_curl.communicate()
        said, _ = await ran_snippet.communicate()
        assert (ran_curl.returncode, ran_snippet.returncode) == (0, 0)
        assert said.decode() == "The capital of France is Paris.\n"
        events = [e.removeprefix("data: ") for e in sse.decode().split("\n\n") if e]
        assert events[-1] == "[DONE]"
        pieces = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
        assert "".join(p or "" for p in pieces) == "The capital of France is Paris."

        # the two compute routes need the completions scope (when the key has scopes)
        scoped = openai_client(client, embed_only)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await scoped.chat.completions.create(model=CHAT, messages=FRANCE)
        assert "completions:create" in caught.value.message
        with pytest.raises(openai.PermissionDeniedError):
            await scoped.completions.create(model=CHAT, prompt="Paris is")
        # the key's token bucket is spent: the gateway refuses before any compute
        refusal: openai.RateLimitError | None = None
        for _ in range(10):
            try:
                await api.completions.create(model=CHAT, prompt="Paris " * 150, max_tokens=1)
            except openai.RateLimitError as exc:
                refusal = exc
                break
        assert refusal is not None
        assert refusal.code == "rate_limit_exceeded"
        assert "tokens" in refusal.message
        assert await service.usage.flush(10)
    assert errors_logged(log_stream) == []
    with psycopg.connect(platform.url) as conn:
        rows = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT request_id, model_id IS NOT NULL, status, error_code, tokens_consumed,"
                " prompt_tokens, completion_tokens FROM usage_events WHERE request_id = ANY(%s)",
                (list(rid.values()),),
            ).fetchall()
        }
    usage = whole.usage
    expected = (usage.total_tokens, usage.prompt_tokens, usage.completion_tokens)
    assert rows[rid["whole"]][1:] == ("success", None, *expected)
    assert rows[rid["stream"]][1:] == ("success", None, *expected)
    status, code, total, prompt, completion = rows[rid["left"]][1:]
    assert (status, code, prompt) == ("error", "CLIENT_DISCONNECTED", usage.prompt_tokens)
    assert 1 <= completion < 400
    assert total == prompt + completion
    access = {
        r["request_id"]: r["http.status_code"]
        for r in log_stream.records()
        if r.get("logger") == "aiaas.access"
    }
    assert (access[rid["whole"]], access[rid["stream"]]) == (200, 200)
