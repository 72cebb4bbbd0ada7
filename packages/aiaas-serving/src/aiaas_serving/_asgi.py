"""OpenAI-compatible embeddings over pure ASGI (no web framework needed).

:class:`OpenAIEmbeddings` is an ASGI app answering ``POST /v1/embeddings`` (and ``GET /v1/models``,
``GET /v1/models/{id}``) from a :class:`Runtime`; :func:`mount_openai` puts it in front of any
ASGI app, which keeps every other path.

Request: ``{"model": "...", "input": "text" | ["text", ...], "encoding_format": "float" |
"base64", "dimensions": N, "user": "...", "truncate": false}``. Response: ``{"object": "list",
"data": [{"object": "embedding", "index": i, "embedding": [...] | "<base64 little-endian
float32>"}], "model": "...", "usage": {"prompt_tokens": n, "total_tokens": n}}`` where the token
counts are the tokens the model saw (special tokens included; after truncation).

Rules, checked in this order before any model work:

- **Content type**: a ``POST`` must say its body is JSON: ``Content-Type: application/json`` or
  ``application/<anything>+json`` (RFC 6839), parameters allowed, a ``charset`` only ``utf-8``.
  Anything else, or none, is 415 ``request_unsupported_media_type`` (the rule and the code of
  the platform's other APIs, aiaas-telemetry's ``read_json``). ``GET`` and ``HEAD`` carry no
  body and are not checked.
- **Size**: the body at most ``max_body_bytes`` (413 ``request_too_large``); valid JSON nested
  no deeper than Python parses (400 ``request_invalid``, never a 500); at most ``max_inputs``
  inputs (400: such a request can never be served); each input at most ``max_input_chars``
  characters and all together at most ``max_request_chars`` (413 ``input_too_large``, param
  ``input``), checked before tokenising, which then runs in a worker thread
  (:meth:`Runtime.aenqueue_many`) so ``/health`` keeps answering (requests of fewer than 1,000
  characters, tokenised in well under a millisecond, stay on the loop).
- **Length**: an input longer than the model's context is refused like OpenAI's API does: 400
  ``context_length_exceeded``, param ``input``, "This model's maximum context length is 256
  tokens, however you requested N tokens ...". ``"truncate": true`` (the Text Embeddings
  Inference extension) embeds its first tokens instead, for adapters that take a
  :class:`~aiaas_serving.TextInput` (``accepts_text_input``); for others it is a 400.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the aiaas
stable code in lower case as ``code`` (:func:`openai_error_response` renders any
:class:`~aiaas_core.AiaasError` so; pass it as ``error_renderers={"/v1/": ...}`` to the auth and
telemetry middlewares so their errors on these paths take the same shape). An overloaded model
answers 429 with ``Retry-After``. A list of inputs is admitted all or none (an idle model admits
any list, see :class:`Runtime`), and a client that disconnects has its requests withdrawn.

Request id: the one of the request context (set by aiaas-telemetry's middleware, which also
sends the ``X-Request-ID`` header) is used for the outcome; only without one does the endpoint
accept the client's ``X-Request-ID`` (or make one) and send the header itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_core import (
    AiaasError,
    ASGIApp,
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    Receive,
    Scope,
    Send,
    read_body,
    run_lifespan,
)
from aiaas_serving._adapter import TextInput
from aiaas_serving._errors import InputTooLarge, ModelNotFound
from aiaas_serving._http import (
    JSON_HEADER,
    MAX_BODY,
    ParamError,
    check_json_content_type,
    finished_before_disconnect,
    model_card,
    openai_error,
    parse_json_object,
    request_ids,
    send_response,
)

if TYPE_CHECKING:
    from aiaas_serving._openai_generation import OpenAIGeneration
    from aiaas_serving._runtime import Runtime
    from aiaas_serving._served import RequestHandle
    from aiaas_serving.generation import GenerationEngine

__all__ = ["EmbeddingsOutcome", "OpenAIEmbeddings", "mount_openai", "openai_error_response"]

logger = logging.getLogger("aiaas_serving")

_MAX_INPUTS: Final = 2048
_MAX_INPUT_CHARS: Final = 100_000
_MAX_REQUEST_CHARS: Final = 1_000_000
# Requests with fewer characters than this are tokenised on the event loop (well under a
# millisecond: less than the hop to a worker thread); larger ones in a worker thread.
_INLINE_CHARS: Final = 1000


class _UnknownModelError(ModelNotFound):
    param = "model"


class _InputTooLongError(PayloadTooLargeError):
    code = "INPUT_TOO_LARGE"
    param = "input"


class _ContextLengthError(BadRequestError):
    code = "CONTEXT_LENGTH_EXCEEDED"
    param = "input"


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class EmbeddingsOutcome:
    """How one ``POST /v1/embeddings`` call ended, for usage accounting (``on_complete``).

    ``model`` is the public id the client asked for (``None`` when the body named none or could
    not be read); ``prompt_tokens`` the tokens the model saw (0 when nothing ran); ``status`` the
    HTTP status answered (``None`` when the client disconnected first); ``error_code`` the stable
    aiaas code of a failure (``None`` on success; ``CLIENT_DISCONNECTED`` for a client that left);
    ``duration_s`` the time from the request's arrival to its answer.
    """

    request_id: str
    model: str | None
    inputs: int = attrs.field(validator=_non_negative)
    prompt_tokens: int = attrs.field(validator=_non_negative)
    status: int | None
    error_code: str | None
    duration_s: float = attrs.field(validator=_non_negative)

    @property
    def ok(self) -> bool:
        """True when the embeddings were answered (status 200)."""
        return self.status == 200


class _Progress:
    """What an embeddings call got to, filled in as it goes."""

    __slots__ = ("inputs", "model", "status", "tokens")

    def __init__(self) -> None:
        self.model: str | None = None
        self.inputs = 0
        self.tokens = 0
        self.status: int | None = None


def openai_error_response(exc: BaseException) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, ASGI headers (``content-type``, ``content-length`` and the error's own, such as
    ``Retry-After``) and body of ``exc`` in OpenAI's error shape, ``{"error": {"message",
    "type", "param", "code"}}``, with the aiaas stable code in lower case as ``code``.

    Any exception that is not an :class:`~aiaas_core.AiaasError` is rendered as a generic 500:
    its text never reaches the client. Pass it to ``AuthMiddleware`` and ``TelemetryMiddleware``
    as ``error_renderers={"/v1/": openai_error_response}``.
    """
    status, headers, body = openai_error(exc)
    headers.insert(1, (b"content-length", str(len(body)).encode()))
    return status, headers, body


def _check_sizes(inputs: list[str], max_input_chars: int, max_request_chars: int) -> None:
    """Bound the inputs before any tokenising: per input and per request, in characters."""
    total = 0
    for index, text in enumerate(inputs):
        if len(text) > max_input_chars:
            where = "'input'" if len(inputs) == 1 else f"input[{index}]"
            raise _InputTooLongError(
                f"{where} is {len(text)} characters long; at most {max_input_chars} characters "
                "are accepted per input: shorten it or split it"
            )
        total += len(text)
    if total > max_request_chars:
        raise _InputTooLongError(
            f"the inputs hold {total} characters together; at most {max_request_chars} are "
            "accepted per request: send them in several requests"
        )


def _context_length_error(exc: InputTooLarge, single: bool) -> _ContextLengthError:
    """OpenAI's refusal of an over-length input (``exc`` knows the length and the limit)."""
    where = "" if single or exc.index is None else f" in input[{exc.index}]"
    return _ContextLengthError(
        f"This model's maximum context length is {exc.limit} tokens, however you requested "
        f'{exc.tokens} tokens{where}. Please reduce your input, or send "truncate": true to '
        f"embed its first {exc.limit} tokens."
    )


def _parse_inputs(raw: object, max_inputs: int) -> list[str]:
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise ParamError("'input' must not be an empty list", "input")
        if all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        elif all(
            isinstance(x, int) or (isinstance(x, list) and all(isinstance(y, int) for y in x))
            for x in raw
        ):
            raise ParamError("token-id inputs are not supported by this server: send text", "input")
        else:
            raise ParamError("'input' must be a string or a list of strings", "input")
    elif raw is None:
        raise ParamError("'input' is required", "input")
    else:
        raise ParamError("'input' must be a string or a list of strings", "input")
    if len(inputs) > max_inputs:
        raise ParamError(
            f"'input' holds {len(inputs)} items; at most {max_inputs} are accepted per request",
            "input",
        )
    if any(not text for text in inputs):
        raise ParamError("'input' must not contain empty strings", "input")
    return inputs


class OpenAIEmbeddings:
    """An ASGI app serving OpenAI's embeddings API from ``runtime``.

    ``models`` maps the public model ids clients send to runtime model names (a sequence means
    the same names; ``None`` exposes every runtime model under its own name). ``timeout`` bounds
    each request (seconds; ``None``: no deadline). ``prefix`` is where the API lives.

    ``max_body_bytes``, ``max_inputs``, ``max_input_chars`` and ``max_request_chars`` bound a
    request (see the module documentation).

    ``on_complete`` is called once per ``POST {prefix}/embeddings`` with the ASGI scope and an
    :class:`EmbeddingsOutcome`, after the answer was sent (or the client left), on the event loop:
    keep it quick and non-blocking (put the outcome on a queue). Its exceptions are logged and
    never reach the client.

    ``extra_models`` returns more public model ids that ``GET {prefix}/models`` lists (and
    ``GET {prefix}/models/{id}`` finds) beside the embedding models: the generation endpoint's
    (:func:`mount_openai` passes it), so the catalogue names every model served.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        models: Mapping[str, str] | Sequence[str] | None = None,
        prefix: str = "/v1",
        timeout: float | None = None,
        max_body_bytes: int = MAX_BODY,
        max_inputs: int = _MAX_INPUTS,
        max_input_chars: int = _MAX_INPUT_CHARS,
        max_request_chars: int = _MAX_REQUEST_CHARS,
        on_complete: Callable[[Scope, EmbeddingsOutcome], None] | None = None,
        extra_models: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        if min(max_body_bytes, max_inputs, max_input_chars, max_request_chars) < 1:
            raise ValueError(
                "max_body_bytes, max_inputs, max_input_chars and max_request_chars must be >= 1"
            )
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.runtime = runtime
        if models is None or isinstance(models, Mapping):
            self._models: dict[str, str] | None = dict(models) if models is not None else None
        else:
            self._models = {name: name for name in models}
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.max_inputs = max_inputs
        self.max_input_chars = max_input_chars
        self.max_request_chars = max_request_chars
        self.on_complete = on_complete
        self.extra_models = extra_models

    def handles(self, path: str) -> bool:
        """True for the paths this app answers."""
        return path in (f"{self.prefix}/embeddings", f"{self.prefix}/models") or path.startswith(
            f"{self.prefix}/models/"
        )

    def _public_models(self) -> dict[str, str]:
        if self._models is not None:
            return {k: v for k, v in self._models.items() if v in self.runtime.models}
        return {name: name for name in self.runtime.models}

    def _resolve(self, public: str) -> str:
        name = self._public_models().get(public)
        if name is None:
            raise _UnknownModelError(f"the model {public!r} does not exist", model=public)
        return name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # One id per request: the request context's (a telemetry middleware sends the header),
        # else the client's or a fresh one, sent here.
        request_id, header_id = request_ids(scope)
        started = time.perf_counter()
        progress = _Progress()
        error_code: str | None = None
        try:
            await self._handle(scope, receive, send, header_id, progress)
        except Exception as exc:
            if not isinstance(exc, AiaasError):
                logger.error("embeddings request %s failed", request_id, exc_info=exc)
            status, headers, body = openai_error(exc)
            error_code = exc.code if isinstance(exc, AiaasError) else AiaasError.code
            progress.status = status
            await send_response(send, status, headers, body, header_id)
        finally:
            if self.on_complete is not None and scope.get("path") == f"{self.prefix}/embeddings":
                if progress.status is None and error_code is None:
                    error_code = "CLIENT_DISCONNECTED"
                self._report(scope, request_id, progress, error_code, started)

    def _report(
        self,
        scope: Scope,
        request_id: str,
        progress: _Progress,
        error_code: str | None,
        started: float,
    ) -> None:
        assert self.on_complete is not None
        try:
            self.on_complete(
                scope,
                EmbeddingsOutcome(
                    request_id=request_id,
                    model=progress.model,
                    inputs=progress.inputs,
                    prompt_tokens=progress.tokens,
                    status=progress.status,
                    error_code=error_code,
                    duration_s=max(0.0, time.perf_counter() - started),
                ),
            )
        except Exception:
            logger.exception("on_complete failed for embeddings request %s", request_id)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str | None,
        progress: _Progress,
    ) -> None:
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        if path == f"{self.prefix}/embeddings":
            if method != "POST":
                raise MethodNotAllowedError(f"use POST for {path}, not {method}", allow=("POST",))
            await self._embeddings(scope, receive, send, request_id, progress)
            return
        if path == f"{self.prefix}/models" or path.startswith(f"{self.prefix}/models/"):
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowedError(
                    f"use GET for {path}, not {method}", allow=("GET", "HEAD")
                )
            listing = set(self._public_models())
            if self.extra_models is not None:
                listing.update(self.extra_models())
            if path == f"{self.prefix}/models":
                payload: dict[str, Any] = {
                    "object": "list",
                    "data": [model_card(model) for model in sorted(listing)],
                }
            else:
                wanted = path.removeprefix(f"{self.prefix}/models/")
                if wanted not in listing:
                    self._resolve(wanted)  # raises model_not_found
                payload = model_card(wanted)
            body = json.dumps(payload, separators=(",", ":")).encode()
            await send_response(
                send, 200, [JSON_HEADER], body if method == "GET" else b"", request_id
            )
            return
        raise NotFoundError(f"no route for {method} {path}", code="ROUTE_NOT_FOUND")

    async def _embeddings(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str | None,
        progress: _Progress,
    ) -> None:
        check_json_content_type(scope)
        raw = await read_body(scope, receive, limit=self.max_body_bytes)
        if raw is None:
            return  # the client left before sending its request
        request = parse_json_object(raw)
        public = request.get("model")
        if not isinstance(public, str) or not public:
            raise ParamError("'model' is required and must be a string", "model")
        progress.model = public
        raw_input = request.get("input")
        inputs = _parse_inputs(raw_input, self.max_inputs)
        progress.inputs = len(inputs)
        _check_sizes(inputs, self.max_input_chars, self.max_request_chars)
        truncate = request.get("truncate", False)
        if not isinstance(truncate, bool):
            raise ParamError("'truncate' must be true or false", "truncate")
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ParamError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        name = self._resolve(public)
        dimensions = request.get("dimensions")
        if dimensions is not None:
            native = getattr(self.runtime.adapter(name), "dimensions", None)
            if native is None:
                raise ParamError(
                    f"'dimensions' is not supported for model {public!r}", "dimensions"
                )
            if isinstance(dimensions, bool) or dimensions != native:
                raise ParamError(
                    f"'dimensions' must be {native} for model {public!r} (it cannot be changed)",
                    "dimensions",
                )
        items: list[Any] = list(inputs)
        if getattr(self.runtime.adapter(name), "accepts_text_input", False):
            items = [TextInput(text, truncate=truncate) for text in inputs]
        elif truncate:
            raise ParamError(f"'truncate' is not supported for model {public!r}", "truncate")
        try:
            if sum(map(len, inputs)) < _INLINE_CHARS:
                handles = self.runtime.enqueue_many(name, items, timeout=self.timeout)
            else:
                handles = await self.runtime.aenqueue_many(name, items, timeout=self.timeout)
        except InputTooLarge as exc:
            if exc.tokens is None or exc.limit is None:
                raise
            raise _context_length_error(exc, isinstance(raw_input, str)) from None
        progress.tokens = sum(h.cost for h in handles)
        results = await self._gather(handles, receive)
        if results is None:
            return  # the client disconnected; its requests were withdrawn
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode(vector, encoding),
            }
            for i, vector in enumerate(results)
        ]
        tokens = progress.tokens
        body = json.dumps(
            {
                "object": "list",
                "data": data,
                "model": public,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            separators=(",", ":"),
        ).encode()
        progress.status = 200
        await send_response(send, 200, [JSON_HEADER], body, request_id)

    async def _gather(
        self, handles: list[RequestHandle[Any]], receive: Receive
    ) -> list[Any] | None:
        async def results() -> list[Any]:
            return [await h for h in handles]

        def withdraw() -> None:
            for h in handles:
                h.cancel()

        work = asyncio.ensure_future(results())
        if not await finished_before_disconnect(work, receive, withdraw):
            return None  # the client went away first
        try:
            return work.result()
        except BaseException:
            withdraw()
            raise


def _encode(vector: Any, encoding: str) -> Any:
    import numpy as np  # noqa: PLC0415 -- keeps this module (and its importers) torch/numpy-free

    array = np.asarray(vector, dtype="<f4").reshape(-1)
    if encoding == "base64":
        return base64.b64encode(array.tobytes()).decode("ascii")
    return array.tolist()


def mount_openai(
    app: ASGIApp | None,
    runtime: Runtime | None,
    *,
    generation: Mapping[str, GenerationEngine] | OpenAIGeneration | None = None,
    **options: Any,
) -> ASGIApp:
    """An ASGI app that answers the OpenAI paths and passes everything else, lifespan included,
    to ``app``.

    ``runtime`` serves ``POST /v1/embeddings`` (see :class:`OpenAIEmbeddings`, whose keyword
    options this takes); ``generation`` serves ``POST /v1/chat/completions`` and ``POST
    /v1/completions``: a mapping of public model ids to generation engines (served with the
    default options and the ``prefix`` and ``timeout`` given here) or a configured
    :class:`~aiaas_serving.OpenAIGeneration`. ``GET /v1/models`` lists the models of both.
    ``runtime`` may be ``None`` when only generation is served.
    """
    if runtime is None and generation is None:
        raise ValueError("mount_openai needs a runtime, generation engines, or both")
    chat: OpenAIGeneration | None = None
    if generation is not None:
        from aiaas_serving._openai_generation import OpenAIGeneration  # noqa: PLC0415

        if isinstance(generation, OpenAIGeneration):
            chat = generation
        else:
            shared = {k: options[k] for k in ("prefix", "timeout") if k in options}
            chat = OpenAIGeneration(generation, **shared)
    endpoints: list[OpenAIEmbeddings | OpenAIGeneration] = []
    if runtime is not None:
        if chat is not None:
            options["extra_models"] = lambda: chat.models
        endpoints.append(OpenAIEmbeddings(runtime, **options))
    if chat is not None:
        endpoints.append(chat)
    if app is None and len(endpoints) == 1:
        return endpoints[0]
    inner = app

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            for endpoint in endpoints:
                if endpoint.handles(path):
                    await endpoint(scope, receive, send)
                    return
        if inner is not None:
            await inner(scope, receive, send)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send)
        else:
            await endpoints[0](scope, receive, send)  # its 404, in OpenAI's shape

    return mounted
