"""The OpenAPI 3.1 document inference-service serves at ``GET /openapi.json``.

It describes what the service answers, errors included: ``POST /v1/embeddings``, ``GET
/v1/models``, ``GET /v1/models/{model}``, ``GET /health``, ``GET /ready``, ``GET /metrics``,
itself and, when chat is served, ``POST /v1/chat/completions`` and ``POST /v1/completions``
(their parameters with types and ranges, the JSON answer, the ``text/event-stream`` answer of
``"stream": true`` with its chunk schemas). Every ``/v1`` error is OpenAI's ``{"error":
{"message", "type", "param", "code"}}`` (:data:`OPENAI_ERROR`);
``/health`` and ``/ready`` answer aiaas-core's health report.

The document is built from small pieces so a new route is one entry: :func:`openapi_document`
takes extra ``paths`` (and ``schemas``) and :func:`v1_responses` gives a ``/v1`` operation its
documented error answers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["OPENAI_ERROR", "openapi_document", "v1_responses"]

#: The statuses and reasons any authenticated ``/v1`` route may answer with an error.
_V1_ERRORS: Final = {
    "400": "Invalid request (wrong types, missing fields, unknown parameters' values).",
    "401": "No API key, or a key that is malformed, unknown, revoked or expired.",
    "403": "The key's role or scopes do not allow this route.",
    "404": "No such model or route.",
    "405": "The route does not answer this method (see Allow).",
    "413": "The body or an input is too large.",
    "415": "The body is not declared as JSON (Content-Type: application/json).",
    "429": "Overloaded, over a rate limit or out of budget (see Retry-After).",
    "503": "A dependency (the key store, the model) is unavailable: retry shortly.",
    "504": "The request did not finish within the service's deadline.",
}

#: OpenAI's error body (the stable aiaas code in lower case as ``code``).
OPENAI_ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {
                    "type": "string",
                    "enum": [
                        "invalid_request_error",
                        "authentication_error",
                        "permission_error",
                        "rate_limit_error",
                        "server_error",
                        # OpenAI's own types of a rate-limit or quota refusal (429), which the
                        # gateway answers as OpenAI does
                        "requests",
                        "tokens",
                        "insufficient_quota",
                    ],
                },
                "param": {"type": ["string", "null"]},
                "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
            },
        }
    },
}

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": OPENAI_ERROR,
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1, "maxLength": 100_000},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 2048,
                        "items": {"type": "string", "minLength": 1, "maxLength": 100_000},
                    },
                ],
                "description": "One text or a list of texts (at most 2,048; 100,000 characters"
                " each, 1,000,000 together).",
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer"},
            "user": {"type": "string"},
            "truncate": {
                "type": "boolean",
                "description": "Embed the first tokens of an over-length input instead of"
                " refusing it (the Text Embeddings Inference extension).",
            },
        },
    },
    "Embedding": {
        "type": "object",
        "required": ["object", "index", "embedding"],
        "properties": {
            "object": {"type": "string", "enum": ["embedding"]},
            "index": {"type": "integer", "minimum": 0},
            "embedding": {
                "oneOf": [
                    {"type": "array", "items": {"type": "number"}},
                    {"type": "string", "contentEncoding": "base64"},
                ]
            },
        },
    },
    "EmbeddingsResponse": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Embedding"}},
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens"],
                "properties": {
                    "prompt_tokens": {"type": "integer", "minimum": 0},
                    "total_tokens": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    },
    "HealthReport": {
        "type": "object",
        "required": ["status", "kind", "checked_at", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "failing"]},
            "kind": {"type": "string", "enum": ["liveness", "readiness"]},
            "checked_at": {"type": "string", "format": "date-time"},
            "checks": {"type": "object", "additionalProperties": {"type": "object"}},
        },
    },
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
        },
    }


def v1_responses(
    ok: Mapping[str, Any], errors: Iterable[str] = tuple(_V1_ERRORS)
) -> dict[str, Any]:
    """A ``/v1`` operation's ``responses``: ``ok`` (e.g. ``{"200": ...}``) and its documented
    errors in OpenAI's shape (default: every status of the table above)."""
    responses = dict(ok)
    for status in errors:
        responses[status] = _json("Error", _V1_ERRORS[status])
    return responses


def _health(kind: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": f"{kind.capitalize()} probe (no key needed)",
            "operationId": kind,
            "responses": {
                "200": _json("HealthReport", "Ok or degraded."),
                "503": _json("HealthReport", "Failing (starting, draining or a critical check)."),
            },
        }
    }


def _paths(model: str) -> dict[str, Any]:
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    model_param = {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "example": model,
    }
    models_errors = ("401", "403", "404", "503")
    return {
        "/v1/embeddings": {
            "post": {
                "summary": "Create embeddings (OpenAI's API)",
                "operationId": "createEmbeddings",
                "security": security,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EmbeddingsRequest"},
                            "example": {"model": model, "input": ["hello", "world"]},
                        }
                    },
                },
                "responses": v1_responses(
                    {"200": _json("EmbeddingsResponse", "One embedding per input, in order.")}
                ),
            }
        },
        "/v1/models": {
            "get": {
                "summary": "The served models",
                "operationId": "listModels",
                "security": security,
                "responses": v1_responses(
                    {"200": _json("ModelList", "The models.")}, ("401", "403", "503")
                ),
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One served model",
                "operationId": "retrieveModel",
                "security": security,
                "parameters": [model_param],
                "responses": v1_responses({"200": _json("Model", "The model.")}, models_errors),
            }
        },
        "/health": _health("liveness"),
        "/ready": _health("readiness"),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


# -- chat completions and completions (aiaas-serving's OpenAIGeneration) -------------------------

_MAX_LOGPROBS: Final = 20
_SEED_BOUND: Final = 2**63 - 1


def _or_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


#: Accepted and ignored, whatever their value.
_IGNORED_PARAMS: Final[dict[str, Any]] = {
    name: {"description": "Accepted and ignored."}
    for name in ("user", "metadata", "store", "service_tier", "parallel_tool_calls")
}

_SAMPLING_PARAMS: Final[dict[str, Any]] = {
    "model": {"type": "string", "minLength": 1},
    "max_tokens": {
        **_or_null({"type": "integer", "minimum": 1}),
        "description": "Tokens to generate at most; the prompt and these must fit the context"
        " (else 400 context_length_exceeded).",
    },
    "temperature": {
        **_or_null({"type": "number", "minimum": 0, "maximum": 2}),
        "description": "0 to 2 (default 1); 0 is greedy.",
    },
    "top_p": {
        **_or_null({"type": "number", "minimum": 0, "maximum": 1}),
        "description": "0 to 1 (default 1); 0 is greedy.",
    },
    "top_k": {
        **_or_null({"type": "integer", "minimum": 0}),
        "description": "Sample from the k most likely tokens (extension; 0 turns it off).",
    },
    "n": {**_or_null({"type": "integer", "enum": [1]}), "description": "Only 1 choice."},
    "stream": {
        **_or_null({"type": "boolean"}),
        "description": "Answer with server-sent events (text/event-stream).",
    },
    "stream_options": {
        **_or_null(
            {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            }
        ),
        "description": "Only with stream: true; include_usage adds a last chunk with the usage.",
    },
    "stop": {
        **_or_null(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "maxItems": 4,
                        "items": {"type": "string", "minLength": 1},
                    },
                ]
            }
        ),
        "description": "Up to 4 strings that end the text (never part of it).",
    },
    "seed": _or_null({"type": "integer", "minimum": -_SEED_BOUND, "maximum": _SEED_BOUND}),
    "presence_penalty": {**_or_null({"const": 0}), "description": "Only 0."},
    "frequency_penalty": {**_or_null({"const": 0}), "description": "Only 0."},
    "logit_bias": {**_or_null({"type": "object", "maxProperties": 0}), "description": "Only {}."},
}

_TEXT_PART: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}

_USAGE: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer", "minimum": 0},
        "completion_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
    },
}

_FINISH: Final[dict[str, Any]] = {"type": "string", "enum": ["stop", "length"]}

_CHAT_LOGPROB: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["token", "logprob", "bytes"],
    "properties": {
        "token": {"type": "string"},
        "logprob": {"type": "number"},
        "bytes": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
    },
}

_CHAT_LOGPROBS: Final[dict[str, Any]] = _or_null(
    {
        "type": "object",
        "required": ["content", "refusal"],
        "properties": {
            "content": {
                "type": "array",
                "items": {
                    **_CHAT_LOGPROB,
                    "properties": {
                        **_CHAT_LOGPROB["properties"],
                        "top_logprobs": {"type": "array", "items": _CHAT_LOGPROB},
                    },
                },
            },
            "refusal": {"type": "null"},
        },
    }
)

_COMPLETION_LOGPROBS: Final[dict[str, Any]] = _or_null(
    {
        "type": "object",
        "required": ["tokens", "token_logprobs", "top_logprobs", "text_offset"],
        "properties": {
            "tokens": {"type": "array", "items": {"type": "string"}},
            "token_logprobs": {"type": "array", "items": {"type": "number"}},
            "top_logprobs": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": {"type": "number"}},
            },
            "text_offset": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
    }
)


def _answer(kind: str, choice: Mapping[str, Any], *, chunk: bool) -> dict[str, Any]:
    """A chat.completion / text_completion object (``chunk``: a streamed piece of one)."""
    usage: dict[str, Any] = {"$ref": "#/components/schemas/GenerationUsage"}
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"] + ([] if chunk else ["usage"]),
        "properties": {
            "id": {"type": "string", "pattern": "^(chatcmpl|cmpl)-[0-9a-f]+$"},
            "object": {"const": kind},
            "created": {"type": "integer", "minimum": 0},
            "model": {"type": "string"},
            "system_fingerprint": {"type": ["string", "null"]},
            "choices": {
                "type": "array",
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["index", *choice, "finish_reason"],
                    "properties": {
                        "index": {"const": 0},
                        **choice,
                        "finish_reason": _or_null(_FINISH) if chunk else _FINISH,
                    },
                },
            },
            "usage": _or_null(usage) if chunk else usage,
        },
    }


_CHAT_SCHEMAS: Final[dict[str, Any]] = {
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": False,
        "description": "OpenAI's chat completion request; any other parameter is a 400 naming"
        " it. Roles: system, developer (as system), user, assistant; the messages are rendered"
        " with the model's chat template.",
        "properties": {
            **_SAMPLING_PARAMS,
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {
                            "type": "string",
                            "enum": ["system", "developer", "user", "assistant"],
                        },
                        "content": {
                            "anyOf": [
                                {"type": "string"},
                                {"type": "array", "items": _TEXT_PART},
                            ],
                            "description": "Text, or text parts (joined by newlines).",
                        },
                    },
                },
            },
            "max_completion_tokens": {
                **_or_null({"type": "integer", "minimum": 1}),
                "description": "Like max_tokens, which it overrides (default: up to the context).",
            },
            "logprobs": _or_null({"type": "boolean"}),
            "top_logprobs": {
                **_or_null({"type": "integer", "minimum": 0, "maximum": _MAX_LOGPROBS}),
                "description": "Alternatives per token; needs logprobs: true.",
            },
            "response_format": {
                **_or_null(
                    {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "text"}},
                        "additionalProperties": False,
                    }
                ),
                "description": 'Only {"type": "text"}.',
            },
            "tools": {**_or_null({"type": "array", "maxItems": 0}), "description": "Only []."},
            "functions": {
                **_or_null({"type": "array", "maxItems": 0}),
                "description": "Only [].",
            },
            "tool_choice": {**_or_null({"const": "none"}), "description": 'Only "none".'},
            **_IGNORED_PARAMS,
        },
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": False,
        "description": "OpenAI's (legacy) completion request; any other parameter is a 400"
        " naming it. max_tokens defaults to 16.",
        "properties": {
            **_SAMPLING_PARAMS,
            "prompt": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 1,
                        "items": {
                            "anyOf": [
                                {"type": "string", "minLength": 1},
                                {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "integer", "minimum": 0},
                                },
                            ]
                        },
                    },
                ],
                "description": "One prompt: text or token ids (below the model's vocabulary"
                " size), or a list of one of either.",
            },
            "logprobs": _or_null({"type": "integer", "minimum": 0, "maximum": _MAX_LOGPROBS}),
            "best_of": {**_or_null({"type": "integer", "const": 1}), "description": "Only 1."},
            "echo": {**_or_null({"const": False}), "description": "Only false."},
            "suffix": {**_or_null({"const": ""}), "description": 'Only "".'},
            **_IGNORED_PARAMS,
        },
    },
    "GenerationUsage": _USAGE,
    "ChatCompletion": _answer(
        "chat.completion",
        {
            "message": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": "string"},
                    "refusal": {"type": "null"},
                },
            },
            "logprobs": _CHAT_LOGPROBS,
        },
        chunk=False,
    ),
    "ChatCompletionChunk": _answer(
        "chat.completion.chunk",
        {
            "delta": {
                "type": "object",
                "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
            },
            "logprobs": _CHAT_LOGPROBS,
        },
        chunk=True,
    ),
    "TextCompletion": _answer(
        "text_completion",
        {"text": {"type": "string"}, "logprobs": _COMPLETION_LOGPROBS},
        chunk=False,
    ),
    "TextCompletionChunk": _answer(
        "text_completion",
        {"text": {"type": "string"}, "logprobs": _COMPLETION_LOGPROBS},
        chunk=True,
    ),
}


def _generation_path(
    *, summary: str, operation_id: str, request: str, answer: str, chunk: str, example: Any
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "operationId": operation_id,
            "security": [{"bearerAuth": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{request}"},
                        "example": example,
                    }
                },
            },
            "responses": v1_responses(
                {
                    "200": {
                        "description": f"The answer: a {answer} (application/json), or with"
                        ' "stream": true server-sent events (text/event-stream): "data: '
                        f'{{{chunk}}}" per piece, a last chunk with the finish_reason, with'
                        " stream_options.include_usage a chunk with empty choices and the"
                        ' usage, then "data: [DONE]". An error after the stream started is one'
                        ' "data: {Error}" event that ends it.',
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{answer}"}
                            },
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    }
                }
            ),
        }
    }


def _chat_paths(chat_model: str) -> dict[str, Any]:
    hello = [{"role": "user", "content": "Hello!"}]
    return {
        "/v1/chat/completions": _generation_path(
            summary="Create a chat completion (OpenAI's API)",
            operation_id="createChatCompletion",
            request="ChatCompletionRequest",
            answer="ChatCompletion",
            chunk="ChatCompletionChunk",
            example={"model": chat_model, "messages": hello, "max_tokens": 16},
        ),
        "/v1/completions": _generation_path(
            summary="Create a completion (OpenAI's legacy API)",
            operation_id="createCompletion",
            request="CompletionRequest",
            answer="TextCompletion",
            chunk="TextCompletionChunk",
            example={"model": chat_model, "prompt": "The capital of France is"},
        ),
    }


def openapi_document(
    *,
    model: str,
    version: str,
    chat_model: str | None = None,
    paths: Mapping[str, Any] | None = None,
    schemas: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The service's OpenAPI 3.1 document (a fresh copy).

    With ``chat_model`` (the public id of the served chat model; ``None``: chat is off) it also
    describes ``POST /v1/chat/completions`` and ``POST /v1/completions``. ``paths`` and
    ``schemas`` add routes and component schemas to the built-in ones (an entry of the same name
    replaces it).
    """
    built_paths = _paths(model)
    built_schemas = dict(_SCHEMAS)
    if chat_model is not None:
        built_paths.update(_chat_paths(chat_model))
        built_schemas.update(_CHAT_SCHEMAS)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "inference-service",
            "version": version,
            "description": f"OpenAI-compatible API serving {model}. Errors on /v1 routes take"
            ' OpenAI\'s shape {"error": {"message", "type", "param", "code"}}.',
        },
        "paths": {**built_paths, **(paths or {})},
        "components": {
            "schemas": {**built_schemas, **(schemas or {})},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: Authorization: Bearer aiaas_...",
                }
            },
        },
    }
    return copy.deepcopy(doc)
