"""``GET /openapi.json``: the service describes every route it answers, and its real answers
(successes and errors, streamed or not, on the real embedding model, a tiny random-initialised
chat model and the real database) conform to the document it serves."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
import torch
from conftest import Platform, make_service, serve
from inference_service import openapi_document
from inference_service._app import ROUTES
from inference_service._gateway import REFUSAL_REASONS, Refusal
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from aiaas_serving.generation import (
    GenerationModel,
    GenerationTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

MODEL = "all-MiniLM-L6-v2"
CHAT = "tiny-chat"
CHAT_ROUTES = {"/v1/chat/completions", "/v1/completions"}
SERVED_ROUTES = {*ROUTES, "/metrics"}  # /metrics: the telemetry middleware's
HELLO = [{"role": "user", "content": "Hello there!"}]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_chat_model() -> GenerationModel:
    """A tiny random-initialised Llama (2 layers, hidden 32) over a real byte-level BPE
    tokenizer with ChatML's special tokens and chat template: cheap to serve on a CPU."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])  # 256, 257
    config = LlamaConfig(
        vocab_size=258,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        eos_token_ids=(257,),
    )
    torch.manual_seed(0)
    return GenerationModel(
        name=CHAT,
        config=config,
        model=LlamaForCausalLM.random(config, seed=0),
        tokenizer=GenerationTokenizer(backend, eos_token_ids=[257], chat_template=CHATML),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def validate(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    """Validate ``value`` against ``schema`` (``$ref`` resolved in the document)."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(value)


def conforms(doc: dict[str, Any], method: str, template: str, response: httpx.Response) -> None:
    """Assert ``response`` is a documented answer of ``method template`` and its JSON body
    validates against the documented schema (``$ref`` resolved in the document)."""
    responses = doc["paths"][template][method]["responses"]
    declared = responses.get(str(response.status_code))
    assert declared is not None, f"{method} {template}: {response.status_code} is undocumented"
    media = response.headers["content-type"].split(";")[0]
    content = declared["content"]
    assert media in content, f"{method} {template}: {media} is not documented"
    if media == "application/json":
        validate(doc, content[media]["schema"], response.json())


def events(response: httpx.Response) -> list[Any]:
    """The JSON payloads of a server-sent events answer, then ``"[DONE]"`` if it came."""
    out: list[Any] = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_the_served_document_describes_every_route_and_real_answers_conform(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    service = make_service(
        platform.database(),
        telemetry,
        minilm,
        chat=tiny_chat_model(),
        INFERENCE_SERVICE_CHAT_MODEL=CHAT,
        INFERENCE_SERVICE_CHAT_KV_CACHE_MIB="1",
    )
    key = {"Authorization": f"Bearer {platform.token}"}
    async with serve(service) as client:
        response = await client.get("/openapi.json")  # public: no key needed
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        doc = response.json()
        assert doc == service.openapi()
        assert doc["openapi"] == "3.1.0"
        assert set(doc["paths"]) == SERVED_ROUTES  # every route the service answers, no more
        jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"])
        for schema in doc["components"]["schemas"].values():
            jsonschema.Draft202012Validator.check_schema(schema)
        head = await client.head("/openapi.json")
        assert (head.status_code, head.content) == (200, b"")

        calls: list[tuple[str, str, httpx.Response]] = [
            (
                "post",
                "/v1/embeddings",
                await client.post(
                    "/v1/embeddings", json={"model": MODEL, "input": "hi"}, headers=key
                ),
            ),
            (
                "post",
                "/v1/embeddings",
                await client.post(
                    "/v1/embeddings",
                    json={"model": MODEL, "input": ["a", "b"], "encoding_format": "base64"},
                    headers=key,
                ),
            ),
            (
                "post",
                "/v1/embeddings",
                await client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}),
            ),
            (
                "post",
                "/v1/embeddings",
                await client.post(
                    "/v1/embeddings",
                    content=b'{"model": 1}',
                    headers={**key, "content-type": "text/plain"},
                ),
            ),
            (
                "post",
                "/v1/embeddings",
                await client.post("/v1/embeddings", json={"model": MODEL, "input": 7}, headers=key),
            ),
            (
                "post",
                "/v1/embeddings",
                await client.post(
                    "/v1/embeddings", json={"model": "nope", "input": "x"}, headers=key
                ),
            ),
            ("get", "/v1/models", await client.get("/v1/models", headers=key)),
            ("get", "/v1/models/{model}", await client.get(f"/v1/models/{MODEL}", headers=key)),
            ("get", "/v1/models/{model}", await client.get(f"/v1/models/{CHAT}", headers=key)),
            ("get", "/v1/models/{model}", await client.get("/v1/models/other", headers=key)),
            (
                "get",
                "/v1/models",
                await client.get("/v1/models", headers={"Authorization": "Bearer x"}),
            ),
            ("get", "/health", await client.get("/health")),
            ("get", "/ready", await client.get("/ready")),
            ("get", "/metrics", await client.get("/metrics")),
        ]
        statuses = [r.status_code for _, _, r in calls]
        assert statuses == [200, 200, 401, 415, 400, 404, 200, 200, 200, 404, 401, 200, 200, 200]
        for method, template, answer in calls:
            conforms(doc, method, template, answer)

        wrong = await client.post("/openapi.json", content=b"{}")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, HEAD"

        await generation_answers_conform(client, doc, key)


async def generation_answers_conform(
    client: httpx.AsyncClient, doc: dict[str, Any], key: dict[str, str]
) -> None:
    """Both generation routes on the tiny random model: 200 (JSON and text/event-stream, every
    chunk validated against the documented chunk schemas), 400, 401, 404, 413, 415."""
    chat_body = {"model": CHAT, "messages": HELLO, "max_tokens": 4, "seed": 1}
    text_body = {"model": CHAT, "prompt": "Once upon", "max_tokens": 4, "seed": 1}
    chat, text = "/v1/chat/completions", "/v1/completions"

    async def post(path: str, **kwargs: Any) -> tuple[str, str, httpx.Response]:
        return ("post", path, await client.post(path, **kwargs))

    calls = [
        await post(chat, json=chat_body, headers=key),
        await post(
            chat,
            json={**chat_body, "logprobs": True, "top_logprobs": 2, "stop": ["\n"]},
            headers=key,
        ),
        await post(text, json=text_body, headers=key),
        await post(text, json={**text_body, "prompt": [72, 105], "logprobs": 2}, headers=key),
        await post(chat, json={**chat_body, "temperature": 3}, headers=key),
        await post(chat, json={**chat_body, "tools": [{"type": "function"}]}, headers=key),
        await post(chat, json={**chat_body, "max_tokens": 100_000}, headers=key),
        await post(text, json={**text_body, "prompt": ["a", "b"]}, headers=key),
        await post(text, json={**text_body, "unknown": 1}, headers=key),
        await post(chat, json=chat_body),
        await post(text, json=text_body, headers={"Authorization": "Bearer nope"}),
        await post(chat, json={**chat_body, "model": "gpt-4"}, headers=key),
        await post(text, json={**text_body, "model": "gpt-4"}, headers=key),
        await post(
            chat, content=json.dumps(chat_body), headers={**key, "content-type": "text/plain"}
        ),
        await post(
            text,
            content=b'{"prompt": "' + b"x" * (4 * 1024 * 1024) + b'"}',
            headers={**key, "content-type": "application/json"},
        ),
    ]
    statuses = [r.status_code for _, _, r in calls]
    assert statuses == [200, 200, 200, 200, *[400] * 5, 401, 401, 404, 404, 415, 413]
    assert calls[0][2].json()["object"] == "chat.completion"
    assert calls[1][2].json()["choices"][0]["logprobs"]["content"]
    assert calls[3][2].json()["choices"][0]["logprobs"]["tokens"]
    assert calls[6][2].json()["error"]["code"] == "context_length_exceeded"
    for method, template, answer in calls:
        conforms(doc, method, template, answer)

    for template, body, chunk_schema in (
        (chat, chat_body, "ChatCompletionChunk"),
        (text, text_body, "TextCompletionChunk"),
    ):
        streamed = await client.post(
            template,
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
            headers=key,
        )
        assert streamed.status_code == 200
        conforms(doc, "post", template, streamed)  # text/event-stream is documented
        assert streamed.headers["content-type"].startswith("text/event-stream")
        *chunks, done = events(streamed)
        assert done == "[DONE]"
        assert len(chunks) >= 2
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] >= 1
        for piece in chunks:
            validate(doc, {"$ref": f"#/components/schemas/{chunk_schema}"}, piece)


def test_chat_routes_are_documented_only_when_chat_is_served(
    platform: Platform, telemetry: Any, minilm: Any
) -> None:
    off = make_service(platform.database(), telemetry, minilm).openapi()
    assert set(off["paths"]) == SERVED_ROUTES - CHAT_ROUTES
    assert "ChatCompletionRequest" not in off["components"]["schemas"]
    on = openapi_document(model=MODEL, version="1", chat_model=CHAT)
    assert set(on["paths"]) == SERVED_ROUTES
    example = on["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"
    ]["example"]
    assert example["model"] == CHAT


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO}, True),
        (
            "ChatCompletionRequest",
            {
                "model": CHAT,
                "messages": [{"role": "developer", "content": [{"type": "text", "text": "x"}]}],
                "max_completion_tokens": 3,
                "temperature": 0,
                "top_p": 1,
                "top_k": 5,
                "n": 1,
                "stream": True,
                "stream_options": {"include_usage": True},
                "stop": ["a", "b", "c", "d"],
                "seed": -(2**63) + 1,
                "logprobs": True,
                "top_logprobs": 20,
                "response_format": {"type": "text"},
                "tools": [],
                "tool_choice": "none",
                "presence_penalty": 0,
                "user": "u",
            },
            True,
        ),
        ("ChatCompletionRequest", {"model": CHAT}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": []}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": [{"role": "tool"}]}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "temperature": 2.5}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "top_p": -0.1}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "max_tokens": 0}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "n": 2}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "stop": ["a"] * 5}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "seed": 2**63}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "top_logprobs": 21}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "tools": [{}]}, False),
        ("ChatCompletionRequest", {"model": CHAT, "messages": HELLO, "best_of": 1}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": "x"}, True),
        ("CompletionRequest", {"model": CHAT, "prompt": [1, 2], "logprobs": 0}, True),
        ("CompletionRequest", {"model": CHAT, "prompt": [[1, 2]], "best_of": 1}, True),
        ("CompletionRequest", {"model": CHAT, "prompt": ["x"], "echo": False}, True),
        ("CompletionRequest", {"model": CHAT, "prompt": ""}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": ["a", "b"]}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": [-1]}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": "x", "logprobs": True}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": "x", "echo": True}, False),
        ("CompletionRequest", {"model": CHAT, "prompt": "x", "messages": HELLO}, False),
    ],
)
def test_the_generation_request_schemas_take_what_the_endpoint_takes(
    schema: str, body: dict[str, Any], valid: bool
) -> None:
    doc = openapi_document(model=MODEL, version="1", chat_model=CHAT)
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
    )
    assert validator.is_valid(body) is valid


def test_the_document_takes_extra_routes_and_schemas_without_sharing_state() -> None:
    extra = {"/v1/chat/completions": {"post": {"responses": {"200": {"description": "ok"}}}}}
    doc = openapi_document(
        model="m", version="9.9.9", paths=extra, schemas={"Chat": {"type": "object"}}
    )
    assert doc["info"]["version"] == "9.9.9"
    assert "/v1/chat/completions" in doc["paths"]
    assert "/v1/embeddings" in doc["paths"]
    assert doc["components"]["schemas"]["Chat"] == {"type": "object"}
    doc["components"]["schemas"]["Error"]["type"] = "mutated"
    assert openapi_document(model="m", version="1")["components"]["schemas"]["Error"]["type"] == (
        "object"
    )


@pytest.mark.parametrize(
    ("template", "statuses"),
    [
        ("/v1/embeddings", {"200", "400", "401", "413", "415", "429"}),
        ("/v1/models", {"200", "401"}),
        ("/v1/chat/completions", {"200", "400", "401", "404", "413", "415", "429", "503"}),
        ("/v1/completions", {"200", "400", "401", "404", "413", "415", "429", "503"}),
    ],
)
def test_v1_routes_document_their_errors_in_openai_shape(template: str, statuses: set[str]) -> None:
    doc = openapi_document(model="m", version="1", chat_model="c")
    (operation,) = doc["paths"][template].values()
    assert statuses <= set(operation["responses"])
    for status, answer in operation["responses"].items():
        if status != "200":
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error"


@pytest.mark.parametrize("reason", REFUSAL_REASONS)
def test_every_refusal_body_matches_the_served_error_schema(reason: Any) -> None:
    """The gateway's 429 bodies use OpenAI's own types (``requests``, ``tokens``,
    ``insufficient_quota``): the served document admits them (the long fuzz campaign found 429s
    that broke it)."""
    doc = openapi_document(model=MODEL, version="1", chat_model=CHAT)
    error = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Error", "components": doc["components"]}
    )
    code = "INSUFFICIENT_QUOTA" if reason == "insufficient_quota" else "RATE_LIMIT_EXCEEDED"
    body = json.loads(Refusal(reason, code, "refused", ()).body())
    error.validate(body)
    assert body["error"]["type"] in {"requests", "tokens", "insufficient_quota"}
    with pytest.raises(jsonschema.ValidationError):
        error.validate({"error": {**body["error"], "type": "not_an_openai_type"}})
