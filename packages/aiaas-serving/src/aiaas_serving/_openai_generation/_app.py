"""The ASGI app: routing, the models list, one generation request from body to answer, and
the ``on_complete`` report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiaas_core import (
    AiaasError,
    MethodNotAllowedError,
    NotFoundError,
    Receive,
    Scope,
    Send,
    read_body,
    run_lifespan,
)
from aiaas_serving._http import (
    JSON_HEADER,
    MAX_BODY,
    check_json_content_type,
    model_card,
    openai_error,
    parse_json_object,
    request_ids,
    send_response,
)
from aiaas_serving._openai_generation._outcome import Endpoint, GenerationOutcome, Progress
from aiaas_serving._openai_generation._request import (
    INLINE_CHARS,
    ParsedRequest,
    find_engine,
    parse_request,
    sampling_params,
    tokenize,
)
from aiaas_serving._openai_generation._response import complete, to_json
from aiaas_serving._openai_generation._stream import stream_answer

if TYPE_CHECKING:
    from aiaas_serving.generation import GenerationEngine, GenerationStream, SamplingParams

__all__ = ["OpenAIGeneration"]

logger = logging.getLogger("aiaas_serving")


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
        return find_engine(self.engines, public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id, header_id = request_ids(scope)
        started = time.perf_counter()
        progress = Progress()
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
        progress: Progress,
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
        body = to_json(payload)
        await send_response(send, 200, [JSON_HEADER], body if method == "GET" else b"", request_id)

    async def _generate(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        endpoint: Endpoint,
        request_id: str,
        header_id: str | None,
        progress: Progress,
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
        parsed = parse_request(parse_json_object(raw), endpoint, progress, self._engine)
        size = len(parsed.prompt_text or "") + sum(len(m["content"]) for m in parsed.messages or ())
        if size < INLINE_CHARS:
            prompt_ids = tokenize(parsed)
        else:
            prompt_ids = await asyncio.to_thread(tokenize, parsed)
        progress.prompt = len(prompt_ids)
        params = sampling_params(parsed, prompt_ids)
        stream = self._start(parsed, prompt_ids, params, request_id)
        if parsed.stream:
            return await stream_answer(
                send, receive, parsed, stream=stream, request_id=header_id, progress=progress
            )
        await complete(
            send, receive, parsed, stream=stream, request_id=header_id, progress=progress
        )
        return None

    def _start(
        self,
        parsed: ParsedRequest,
        prompt_ids: list[int],
        params: SamplingParams,
        request_id: str,
    ) -> GenerationStream:
        # The checks of _sampling_params are the engine's own bounds (the context, the whole KV
        # cache): what it may still refuse is Overloaded (429) or ShuttingDown (503).
        return parsed.engine.generate(
            prompt_ids, params, timeout=self.timeout, request_id=request_id
        )
