"""OpenAI-compatible text generation over pure ASGI: chat completions and completions.

:class:`OpenAIGeneration` is an ASGI app answering ``POST /v1/chat/completions`` and ``POST
/v1/completions`` (and ``GET /v1/models``, ``GET /v1/models/{id}`` when served on its own) from
:class:`~aiaas_serving.generation.GenerationEngine` instances, one per public model id.
:func:`~aiaas_serving.mount_openai` serves it beside the embeddings endpoint (``generation=``), and
``GET /v1/models`` then lists every model of both.

Requests take OpenAI's parameters: ``model``, ``messages`` (chat: roles ``system``,
``developer`` (as ``system``), ``user`` and ``assistant``; ``content`` a string or a list of
``{"type": "text", "text": ...}`` parts, joined by newlines) rendered with the model's chat
template (``add_generation_prompt``), or ``prompt`` (completions: a string, a list of token ids,
or a list of one of either), ``max_tokens`` (and ``max_completion_tokens`` for chat; default: up
to the context length for chat, 16 for completions, like OpenAI), ``temperature`` (0 to 2,
default 1; 0 is greedy), ``top_p`` (0 to 1; 0 is greedy), ``stop`` (a string or up to 4),
``seed``, ``logprobs`` (chat: ``true`` with ``top_logprobs`` 0 to 20; completions: 0 to 20),
``n`` (only 1), ``stream`` and ``stream_options.include_usage``, and the extension ``top_k``.

Accepted and ignored (they change nothing here): ``user``, ``metadata``, ``store``,
``service_tier``, ``parallel_tool_calls``; and these only at their neutral values:
``presence_penalty``/``frequency_penalty`` 0, ``logit_bias`` empty, ``response_format``
``{"type": "text"}``, ``tools``/``functions`` empty, ``tool_choice`` ``"none"``, ``best_of`` 1,
``echo`` false, ``suffix`` empty. Any other value of those, and any other parameter, is a 400
naming it ("Unrecognized request argument supplied", as OpenAI answers).

Answers: ``chat.completion`` / ``text_completion`` objects with ``id`` (``chatcmpl-...`` /
``cmpl-...``), ``created``, ``model``, one choice with its ``finish_reason`` (``stop``: EOS or a
stop string, which is never part of the text; ``length``: ``max_tokens`` or the context), and
``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``). With ``"stream": true``
the answer is server-sent events: ``data: {chunk}`` per piece of text (chat: the first chunk
carries the role), a last chunk with the ``finish_reason``, with ``include_usage`` a final chunk
with empty ``choices`` and the usage, then ``data: [DONE]``. An error after the stream started
is sent as ``data: {"error": {...}}`` and ends it (the official clients raise it).

The HTTP rules are the embeddings endpoint's (:mod:`aiaas_serving._http`): JSON content type
(415), the body at most ``max_body_bytes`` (413), hostile JSON is a 400 and never a 500, OpenAI's
error shape, one request id per request. The context is the model's context length, or what the
engine's whole KV cache holds when that is less (the default ``max_tokens`` of a chat fills it);
a prompt that does not fit it with the tokens asked for is 400 ``context_length_exceeded``; an
unknown model 404 ``model_not_found``; a full engine 429 with ``Retry-After``; a draining one
503. Chat templates and tokenising run in a worker thread for prompts of 1,000 characters or
more (the body is bounded first). A client that disconnects (waiting or mid-stream) has its
generation cancelled: the engine frees its KV blocks at its next step; it is reported with
``error_code`` ``CLIENT_DISCONNECTED`` (a streamed answer's 200 had been sent: the access log
keeps it) and never logged as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_core import (
    AiaasError,
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    Receive,
    Scope,
    Send,
    read_body,
    run_lifespan,
)
from aiaas_serving._errors import InvalidInput, ModelNotFound
from aiaas_serving._http import (
    JSON_HEADER,
    MAX_BODY,
    ParamError,
    check_json_content_type,
    error_payload,
    finished_before_disconnect,
    model_card,
    openai_error,
    parse_json_object,
    request_ids,
    send_response,
)

if TYPE_CHECKING:
    from aiaas_serving.generation import (
        GenerationEngine,
        GenerationStream,
        SamplingParams,
        TokenLogprob,
    )

__all__ = ["GenerationOutcome", "OpenAIGeneration"]

logger = logging.getLogger("aiaas_serving")

Endpoint = Literal["chat.completions", "completions"]

_INLINE_CHARS: Final = 1000  # prompts shorter than this are templated/tokenised on the loop
_MAX_STOP: Final = 4
_MAX_LOGPROBS: Final = 20
_COMPLETIONS_DEFAULT_MAX_TOKENS: Final = 16  # OpenAI's default for /v1/completions
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE: Final = b"data: [DONE]\n\n"
_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
# Accepted and ignored, whatever their value.
_IGNORED: Final = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_COMMON: Final = frozenset(
    {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "stream",
        "stream_options",
        "stop",
        "seed",
        "logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
    }
)
_CHAT_KEYS: Final = (
    _COMMON
    | _IGNORED
    | {
        "messages",
        "max_completion_tokens",
        "top_logprobs",
        "response_format",
        "tools",
        "functions",
        "tool_choice",
    }
)
_COMPLETION_KEYS: Final = _COMMON | _IGNORED | {"prompt", "best_of", "echo", "suffix"}


class _ContextLengthError(BadRequestError):
    code = "CONTEXT_LENGTH_EXCEEDED"

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class _UnknownModelError(ModelNotFound):
    param = "model"


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class GenerationOutcome:
    """How one ``POST /v1/chat/completions`` or ``/v1/completions`` call ended, for usage
    accounting (``on_complete``).

    ``endpoint`` is ``"chat.completions"`` or ``"completions"``; ``model`` the public id the
    client asked for (``None`` when the body named none or could not be read);
    ``prompt_tokens`` the prompt's tokens (0 when it was never tokenised) and
    ``completion_tokens`` the tokens generated (those streamed before a failure or a disconnect
    included); ``status`` the HTTP status answered (``None`` when the client disconnected before
    the answer was complete: counted as 499); ``error_code`` the stable aiaas code of a failure
    (``None`` on success; ``CLIENT_DISCONNECTED`` for a client that left; a stream that failed
    after its 200 keeps ``status`` 200 with the error's code); ``finish_reason`` ``"stop"`` or
    ``"length"`` when generation finished; ``stream`` whether the answer was streamed;
    ``duration_s`` the time from the request's arrival to its answer's end.
    """

    request_id: str
    endpoint: Endpoint
    model: str | None
    prompt_tokens: int = attrs.field(validator=_non_negative)
    completion_tokens: int = attrs.field(validator=_non_negative)
    status: int | None
    error_code: str | None
    finish_reason: str | None = None
    stream: bool = False
    duration_s: float = attrs.field(validator=_non_negative)

    @property
    def ok(self) -> bool:
        """True when the generation was answered in full (status 200, no error)."""
        return self.status == 200 and self.error_code is None

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together (what OpenAI bills)."""
        return self.prompt_tokens + self.completion_tokens


class _Progress:
    """What a generation call got to, filled in as it goes."""

    __slots__ = ("completion", "finish_reason", "model", "prompt", "status", "stream")

    def __init__(self) -> None:
        self.model: str | None = None
        self.prompt = 0
        self.completion = 0
        self.status: int | None = None
        self.finish_reason: str | None = None
        self.stream = False


@attrs.frozen
class _Request:
    """A parsed, validated request, before tokenising."""

    endpoint: Endpoint
    public: str
    engine: GenerationEngine
    messages: list[dict[str, str]] | None
    prompt_text: str | None
    prompt_ids: list[int] | None
    max_tokens: int | None
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    logprobs: int | None  # None: none; else the number of alternatives


# -- parameter parsing --------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(request: Mapping[str, Any], name: str, default: float, high: float) -> float:
    low = 0.0
    value = request.get(name)
    if value is None:
        return default
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ParamError(f"'{name}' must be a number from {low:g} to {high:g}", name)
    return float(value)


def _neutral(request: Mapping[str, Any], endpoint: Endpoint) -> None:
    """Refuse parameters we accept only at the value that changes nothing."""
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("presence_penalty", lambda v: v == 0 and not isinstance(v, bool), "0"),
        ("frequency_penalty", lambda v: v == 0 and not isinstance(v, bool), "0"),
        ("logit_bias", lambda v: v == {}, "empty"),
    ]
    if endpoint == "chat.completions":
        checks += [
            ("response_format", lambda v: v == {"type": "text"}, '{"type": "text"}'),
            ("tools", lambda v: v == [], "empty"),
            ("functions", lambda v: v == [], "empty"),
            ("tool_choice", lambda v: v == "none", '"none"'),
        ]
    else:
        checks += [
            ("best_of", lambda v: v == 1 and _is_int(v), "1"),
            ("echo", lambda v: v is False, "false"),
            ("suffix", lambda v: v == "", "empty"),
        ]
    for name, neutral, shown in checks:
        value = request.get(name)
        if value is not None and not neutral(value):
            raise ParamError(
                f"'{name}' is not supported by this server (only {shown} or null is accepted):"
                " remove it",
                name,
            )


def _text_content(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for index, part in enumerate(content):
            here = f"{where}[{index}]"
            if not isinstance(part, dict):
                raise ParamError(f"'{here}' must be an object with 'type' and 'text'", here)
            kind = part.get("type")
            if kind != "text":
                shown = kind if isinstance(kind, str) else repr(kind)
                raise ParamError(
                    f"'{here}.type' is {shown[:40]!r}: this model reads text only, send"
                    " parts of type 'text'",
                    f"{here}.type",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise ParamError(f"'{here}.text' must be a string", f"{here}.text")
            texts.append(text)
        return "\n".join(texts)
    raise ParamError(f"'{where}' must be a string or a list of text parts", where)


def _messages(raw: object) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise ParamError("'messages' is required and must be a non-empty list", "messages")
    messages: list[dict[str, str]] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ParamError(f"'{where}' must be an object with 'role' and 'content'", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            shown = role if isinstance(role, str) else repr(role)
            raise ParamError(
                f"'{where}.role' is {shown[:40]!r}: use 'system', 'developer', 'user' or"
                " 'assistant' (tools and functions are not supported)",
                f"{where}.role",
            )
        if "content" not in message or message["content"] is None:
            raise ParamError(f"'{where}.content' is required", f"{where}.content")
        content = _text_content(message["content"], f"{where}.content")
        messages.append({"role": _ROLES[role], "content": content})
    return messages


def _prompt(raw: object) -> tuple[str | None, list[int] | None]:
    """A completions ``prompt``: text or token ids (one prompt per request)."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (str, list)):
        raw = raw[0]  # a batch of one
    if isinstance(raw, str):
        return raw, None
    if isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        return None, list(raw)
    if isinstance(raw, list) and len(raw) > 1 and all(isinstance(x, (str, list)) for x in raw):
        raise ParamError(
            "'prompt' holds several prompts; this server answers one prompt per request: send"
            " one request per prompt",
            "prompt",
        )
    raise ParamError(
        "'prompt' is required and must be a string or a non-empty list of token ids", "prompt"
    )


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ParamError("'stop' must be a string or a list of strings", "stop")
    if len(stops) > _MAX_STOP:
        raise ParamError(f"'stop' takes at most {_MAX_STOP} strings, got {len(stops)}", "stop")
    if any(not s for s in stops):
        raise ParamError("'stop' strings must not be empty", "stop")
    return tuple(stops)


def _max_tokens(request: Mapping[str, Any], endpoint: Endpoint) -> int | None:
    names = ("max_completion_tokens", "max_tokens") if endpoint == "chat.completions" else ()
    chosen = "max_tokens"
    for name in names:
        if request.get(name) is not None:
            chosen = name
            break
    value = request.get(chosen)
    if value is None:
        return None if endpoint == "chat.completions" else _COMPLETIONS_DEFAULT_MAX_TOKENS
    if not _is_int(value) or value < 1:
        raise ParamError(f"'{chosen}' must be an integer >= 1", chosen)
    return int(value)


def _logprobs(request: Mapping[str, Any], endpoint: Endpoint) -> int | None:
    raw = request.get("logprobs")
    if endpoint == "completions":
        if raw is None:
            return None
        if not _is_int(raw) or not 0 <= raw <= _MAX_LOGPROBS:
            raise ParamError(f"'logprobs' must be an integer from 0 to {_MAX_LOGPROBS}", "logprobs")
        return int(raw)
    if raw is not None and not isinstance(raw, bool):
        raise ParamError("'logprobs' must be true or false", "logprobs")
    top = request.get("top_logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= _MAX_LOGPROBS):
        raise ParamError(
            f"'top_logprobs' must be an integer from 0 to {_MAX_LOGPROBS}", "top_logprobs"
        )
    if not raw:
        if top is not None:
            raise ParamError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return None
    return int(top or 0)


def _sampling(request: Mapping[str, Any]) -> dict[str, Any]:
    temperature = _number(request, "temperature", 1.0, 2.0)
    top_p = _number(request, "top_p", 1.0, 1.0)
    if top_p == 0.0:  # only the most likely token: greedy
        temperature, top_p = 0.0, 1.0
    top_k = request.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise ParamError("'top_k' must be an integer >= 0 (0 turns it off)", "top_k")
    seed = request.get("seed")
    if seed is not None and (not _is_int(seed) or abs(seed) >= 2**63):
        raise ParamError("'seed' must be an integer between -2**63+1 and 2**63-1", "seed")
    n = request.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise ParamError(
            f"'n' must be 1 (got {n!r}): this server returns one choice per request; send"
            " several requests (with different seeds) for several choices",
            "n",
        )
    return {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": int(top_k or 0),
        "seed": seed,
        "stop": _stop(request.get("stop")),
    }


def _stream_options(request: Mapping[str, Any], stream: bool) -> bool:
    options = request.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ParamError("'stream_options' is only allowed when 'stream' is true", "stream_options")
    if not isinstance(options, dict):
        raise ParamError("'stream_options' must be an object", "stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise ParamError(
            "'stream_options.include_usage' must be true or false", "stream_options.include_usage"
        )
    return include


# -- rendering ----------------------------------------------------------------------------------


def _token_text(engine: GenerationEngine, token_id: int) -> str:
    return str(engine.tokenizer.token_text(token_id))


def _chat_logprobs(engine: GenerationEngine, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        text = _token_text(engine, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {
                **entry(item.token_id, item.logprob),
                "top_logprobs": [entry(t, lp) for t, lp in item.top],
            }
            for item in logprobs
        ],
        "refusal": None,
    }


def _completion_logprobs(
    engine: GenerationEngine, logprobs: Sequence[TokenLogprob], offset: int
) -> tuple[dict[str, Any], int]:
    tokens = [_token_text(engine, item.token_id) for item in logprobs]
    offsets: list[int] = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [item.logprob for item in logprobs],
        "top_logprobs": [{_token_text(engine, t): lp for t, lp in item.top} for item in logprobs],
        "text_offset": offsets,
    }, offset


def _context(engine: GenerationEngine) -> int:
    """The longest sequence ``engine`` serves: the model's context length, or what its whole KV
    cache holds when that is less (a request is never admitted beyond it)."""
    capacity = engine.num_blocks * engine.options.block_size
    return min(engine.max_model_len, capacity)


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + _json(payload) + b"\n\n"


class OpenAIGeneration:
    """An ASGI app serving OpenAI's chat completions and completions APIs from generation
    engines (see the module documentation for the parameters, answers and rules).

    ``engines`` maps the public model ids clients send to started
    :class:`~aiaas_serving.generation.GenerationEngine` instances (the caller starts and closes
    them). ``timeout`` bounds each request's generation (seconds; ``None``: no deadline);
    ``prefix`` is where the API lives; ``max_body_bytes`` bounds a request body.

    ``on_complete`` is called once per ``POST`` to either route with the ASGI scope and a
    :class:`GenerationOutcome`, after the answer was sent (or the client left), on the event
    loop: keep it quick and non-blocking. Its exceptions are logged and never reach the client.
    """

    def __init__(
        self,
        engines: Mapping[str, GenerationEngine],
        *,
        prefix: str = "/v1",
        timeout: float | None = None,
        max_body_bytes: int = MAX_BODY,
        on_complete: Callable[[Scope, GenerationOutcome], None] | None = None,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        if any(not name for name in engines):
            raise ValueError("engine names (the public model ids) must be non-empty strings")
        self.engines = dict(engines)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.on_complete = on_complete
        self._routes: dict[str, Endpoint] = {
            f"{self.prefix}/chat/completions": "chat.completions",
            f"{self.prefix}/completions": "completions",
        }

    @property
    def models(self) -> list[str]:
        """The public model ids served, sorted."""
        return sorted(self.engines)

    def handles(self, path: str) -> bool:
        """True for the paths this app answers."""
        return (
            path in self._routes
            or path == f"{self.prefix}/models"
            or path.startswith(f"{self.prefix}/models/")
        )

    def _engine(self, public: str) -> GenerationEngine:
        engine = self.engines.get(public)
        if engine is None:
            raise _UnknownModelError(f"the model {public!r} does not exist", model=public)
        return engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id, header_id = request_ids(scope)
        started = time.perf_counter()
        progress = _Progress()
        error_code: str | None = None
        path: str = scope.get("path", "")
        endpoint = self._routes.get(path)
        try:
            if endpoint is None:
                await self._models(scope, send, header_id)
                return
            error_code = await self._generate(
                scope,
                receive,
                send,
                endpoint=endpoint,
                request_id=request_id,
                header_id=header_id,
                progress=progress,
            )
        except Exception as exc:
            if not isinstance(exc, AiaasError):
                logger.error("generation request %s failed", request_id, exc_info=exc)
            status, headers, body = openai_error(exc)
            error_code = exc.code if isinstance(exc, AiaasError) else AiaasError.code
            progress.status = status
            await send_response(send, status, headers, body, header_id)
        finally:
            if self.on_complete is not None and endpoint is not None:
                if progress.status is None and error_code is None:
                    error_code = "CLIENT_DISCONNECTED"
                self._report(
                    scope,
                    endpoint,
                    request_id=request_id,
                    progress=progress,
                    error_code=error_code,
                    started=started,
                )

    def _report(
        self,
        scope: Scope,
        endpoint: Endpoint,
        *,
        request_id: str,
        progress: _Progress,
        error_code: str | None,
        started: float,
    ) -> None:
        assert self.on_complete is not None
        try:
            self.on_complete(
                scope,
                GenerationOutcome(
                    request_id=request_id,
                    endpoint=endpoint,
                    model=progress.model,
                    prompt_tokens=progress.prompt,
                    completion_tokens=progress.completion,
                    status=progress.status,
                    error_code=error_code,
                    finish_reason=progress.finish_reason,
                    stream=progress.stream,
                    duration_s=max(0.0, time.perf_counter() - started),
                ),
            )
        except Exception:
            logger.exception("on_complete failed for generation request %s", request_id)

    async def _models(self, scope: Scope, send: Send, request_id: str | None) -> None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if not self.handles(path):
            raise NotFoundError(f"no route for {method} {path}", code="ROUTE_NOT_FOUND")
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(f"use GET for {path}, not {method}", allow=("GET", "HEAD"))
        if path == f"{self.prefix}/models":
            payload: dict[str, Any] = {
                "object": "list",
                "data": [model_card(model) for model in self.models],
            }
        else:
            wanted = path.removeprefix(f"{self.prefix}/models/")
            self._engine(wanted)
            payload = model_card(wanted)
        body = _json(payload)
        await send_response(send, 200, [JSON_HEADER], body if method == "GET" else b"", request_id)

    # -- one generation ---------------------------------------------------------------------------

    def _parse(self, request: dict[str, Any], endpoint: Endpoint, progress: _Progress) -> _Request:
        public = request.get("model")
        if not isinstance(public, str) or not public:
            raise ParamError("'model' is required and must be a string", "model")
        progress.model = public
        known = _CHAT_KEYS if endpoint == "chat.completions" else _COMPLETION_KEYS
        for key in request:
            if key not in known:
                raise ParamError(f"Unrecognized request argument supplied: {key[:64]}", key[:64])
        stream = request.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise ParamError("'stream' must be true or false", "stream")
        progress.stream = stream
        include_usage = _stream_options(request, stream)
        _neutral(request, endpoint)
        params = _sampling(request)
        max_tokens = _max_tokens(request, endpoint)
        logprobs = _logprobs(request, endpoint)
        messages: list[dict[str, str]] | None = None
        prompt_text: str | None = None
        prompt_ids: list[int] | None = None
        if endpoint == "chat.completions":
            messages = _messages(request.get("messages"))
        else:
            prompt_text, prompt_ids = _prompt(request.get("prompt"))
        engine = self._engine(public)
        return _Request(
            endpoint=endpoint,
            public=public,
            engine=engine,
            messages=messages,
            prompt_text=prompt_text,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            params=params,
            stream=stream,
            include_usage=include_usage,
            logprobs=logprobs,
        )

    async def _generate(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        endpoint: Endpoint,
        request_id: str,
        header_id: str | None,
        progress: _Progress,
    ) -> str | None:
        """Answer one generation request; the error code of a stream that failed after its 200
        (``None`` otherwise)."""
        method: str = scope.get("method", "GET")
        if method != "POST":
            path = scope.get("path", "")
            raise MethodNotAllowedError(f"use POST for {path}, not {method}", allow=("POST",))
        check_json_content_type(scope)
        raw = await read_body(scope, receive, limit=self.max_body_bytes)
        if raw is None:
            return None  # the client left before sending its request
        parsed = self._parse(parse_json_object(raw), endpoint, progress)
        size = len(parsed.prompt_text or "") + sum(len(m["content"]) for m in parsed.messages or ())
        if size < _INLINE_CHARS:
            prompt_ids = self._tokenize(parsed)
        else:
            prompt_ids = await asyncio.to_thread(self._tokenize, parsed)
        progress.prompt = len(prompt_ids)
        params = self._sampling_params(parsed, prompt_ids)
        stream = self._start(parsed, prompt_ids, params, request_id)
        if parsed.stream:
            return await self._stream(
                send, receive, parsed, stream=stream, request_id=header_id, progress=progress
            )
        await self._complete(
            send, receive, parsed, stream=stream, request_id=header_id, progress=progress
        )
        return None

    def _tokenize(self, parsed: _Request) -> list[int]:
        tokenizer = parsed.engine.tokenizer
        if parsed.prompt_ids is not None:
            vocab = int(parsed.engine.model.config.vocab_size)
            for index, token in enumerate(parsed.prompt_ids):
                if not 0 <= token < vocab:
                    raise ParamError(
                        f"'prompt' holds token id {token} at [{index}]: this model's token ids"
                        f" are 0 to {vocab - 1}",
                        "prompt",
                    )
            return list(parsed.prompt_ids)
        if parsed.messages is not None:
            text = _render_chat(tokenizer, parsed.messages)
            return list(tokenizer.encode(text, add_special_tokens=False))
        assert parsed.prompt_text is not None
        if not parsed.prompt_text:
            raise ParamError("'prompt' must not be empty", "prompt")
        return list(tokenizer.encode(parsed.prompt_text, add_special_tokens=True))

    def _sampling_params(self, parsed: _Request, prompt_ids: list[int]) -> SamplingParams:
        from aiaas_serving.generation import (  # noqa: PLC0415 -- torch only when used
            InvalidSamplingParams,
            SamplingParams,
        )

        limit = _context(parsed.engine)
        what = "messages" if parsed.endpoint == "chat.completions" else "prompt"
        if len(prompt_ids) >= limit:
            raise _ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, your {what}"
                f" resulted in {len(prompt_ids)} tokens. Please reduce the length of the"
                f" {what}.",
                what,
            )
        max_tokens = parsed.max_tokens
        room = limit - len(prompt_ids)
        if max_tokens is None:
            max_tokens = room
        elif max_tokens > room:
            raise _ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you requested"
                f" {len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the {what},"
                f" {max_tokens} in the completion). Please reduce the length of the {what} or"
                " completion.",
                what,
            )
        try:
            return SamplingParams(max_tokens=max_tokens, logprobs=parsed.logprobs, **parsed.params)
        except InvalidSamplingParams as exc:
            raise ParamError(exc.message, exc.param) from None

    def _start(
        self,
        parsed: _Request,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
    ) -> GenerationStream:
        # The checks of _sampling_params are the engine's own bounds (the context, the whole KV
        # cache): what it may still refuse is Overloaded (429) or ShuttingDown (503).
        return parsed.engine.generate(
            prompt_ids, params, timeout=self.timeout, request_id=request_id
        )

    def _base(self, parsed: _Request, ident: str, created: int, *, chunk: bool) -> dict[str, Any]:
        if parsed.endpoint == "chat.completions":
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": parsed.public,
            "system_fingerprint": None,
        }

    @staticmethod
    def _usage(progress: _Progress) -> dict[str, int]:
        return {
            "prompt_tokens": progress.prompt,
            "completion_tokens": progress.completion,
            "total_tokens": progress.prompt + progress.completion,
        }

    async def _complete(
        self,
        send: Send,
        receive: Receive,
        parsed: _Request,
        *,
        stream: GenerationStream,
        request_id: str | None,
        progress: _Progress,
    ) -> None:
        work = asyncio.ensure_future(stream.result())
        if not await finished_before_disconnect(work, receive, stream.cancel):
            return  # the client went away first
        result = work.result()
        progress.completion = result.completion_tokens
        progress.finish_reason = result.finish_reason
        chat = parsed.endpoint == "chat.completions"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        payload = self._base(parsed, ident, int(time.time()), chunk=False)
        logprobs: dict[str, Any] | None = None
        if parsed.logprobs is not None and result.logprobs is not None:
            if chat:
                logprobs = _chat_logprobs(parsed.engine, result.logprobs)
            else:
                logprobs, _ = _completion_logprobs(parsed.engine, result.logprobs, 0)
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": result.finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": result.text,
                "logprobs": logprobs,
                "finish_reason": result.finish_reason,
            }
        payload["choices"] = [choice]
        payload["usage"] = self._usage(progress)
        progress.status = 200
        await send_response(send, 200, [JSON_HEADER], _json(payload), request_id)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        parsed: _Request,
        *,
        stream: GenerationStream,
        request_id: str | None,
        progress: _Progress,
    ) -> str | None:
        headers = list(_SSE_HEADERS)
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        failure: list[str] = []
        work = asyncio.ensure_future(self._pump(send, parsed, stream, progress, failure))
        if not await finished_before_disconnect(work, receive, stream.cancel):
            return None  # the client went away mid-stream
        if not work.result():
            stream.cancel()
            return None  # the transport refused a write: the client is gone
        progress.status = 200
        return failure[0] if failure else None

    async def _pump(
        self,
        send: Send,
        parsed: _Request,
        stream: GenerationStream,
        progress: _Progress,
        failure: list[str],
    ) -> bool:
        """Send the stream's events; False when the transport refused a write."""
        chat = parsed.endpoint == "chat.completions"
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        base = self._base(parsed, ident, int(time.time()), chunk=True)
        if parsed.include_usage:
            base["usage"] = None
        offset = 0

        async def emit(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        def chunk(text: str | None, logprobs: Any, finish: str | None) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                item: dict[str, Any] = {"index": 0, "delta": delta}
            else:
                item = {"index": 0, "text": text or ""}
            item["logprobs"] = logprobs
            item["finish_reason"] = finish
            return {**base, "choices": [item]}

        try:
            if chat:
                first = chunk("", None, None)
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                await emit(_event(first))
            try:
                async for delta in stream:
                    progress.completion += len(delta.token_ids)
                    logprobs: Any = None
                    if parsed.logprobs is not None and delta.logprobs:
                        if chat:
                            logprobs = _chat_logprobs(parsed.engine, delta.logprobs)
                        else:
                            logprobs, offset = _completion_logprobs(
                                parsed.engine, delta.logprobs, offset
                            )
                    elif not chat:
                        offset += len(delta.text)
                    if delta.text or logprobs is not None:
                        await emit(_event(chunk(delta.text, logprobs, None)))
                    if delta.finish_reason is not None:
                        progress.finish_reason = delta.finish_reason
                        await emit(_event(chunk(None, None, delta.finish_reason)))
            except AiaasError as exc:
                failure.append(exc.code)
                await emit(_event(error_payload(exc)[1]), more=False)
                return True
            except OSError:
                raise
            except Exception as exc:
                logger.error("generation stream %s failed", ident, exc_info=exc)
                failure.append(AiaasError.code)
                await emit(_event(error_payload(exc)[1]), more=False)
                return True
            if parsed.include_usage:
                await emit(_event({**base, "choices": [], "usage": self._usage(progress)}))
            await emit(_DONE, more=False)
        except OSError:  # uvicorn's ClientDisconnected: nobody is left to read
            return False
        return True


def _render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt of ``messages`` by the model's chat template: a template that refuses them (a
    ``raise_exception`` of the template, such as roles that do not alternate) is a 400 on
    ``messages``; a model without a template a 400 on ``model``."""
    from aiaas_serving.generation import ChatTemplateMissing  # noqa: PLC0415 -- torch

    try:
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    except ChatTemplateMissing:
        raise ParamError(
            "this model has no chat template, so it cannot answer chat messages: use"
            " /v1/completions with a prompt",
            "model",
        ) from None
    except InvalidInput as exc:
        raise ParamError(exc.message, "messages") from None
