"""The streamed answer: server-sent events, one chunk per piece of text, the last with the
``finish_reason``, the usage when asked for, then ``data: [DONE]``; an error after the 200 is
sent as an event and ends the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from aiaas_core import AiaasError, Receive, Send
from aiaas_serving._http import error_payload, finished_before_disconnect
from aiaas_serving._openai_generation._outcome import Progress, usage
from aiaas_serving._openai_generation._request import ParsedRequest
from aiaas_serving._openai_generation._response import (
    chat_logprobs,
    completion_logprobs,
    response_base,
    to_json,
)

if TYPE_CHECKING:
    from aiaas_serving.generation import GenerationStream

__all__ = ["stream_answer"]

logger = logging.getLogger("aiaas_serving")

_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE: Final = b"data: [DONE]\n\n"


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + to_json(payload) + b"\n\n"


async def stream_answer(
    send: Send,
    receive: Receive,
    parsed: ParsedRequest,
    *,
    stream: GenerationStream,
    request_id: str | None,
    progress: Progress,
) -> str | None:
    headers = list(_SSE_HEADERS)
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    failure: list[str] = []
    work = asyncio.ensure_future(_pump(send, parsed, stream, progress, failure))
    if not await finished_before_disconnect(work, receive, stream.cancel):
        return None  # the client went away mid-stream
    if not work.result():
        stream.cancel()
        return None  # the transport refused a write: the client is gone
    progress.status = 200
    return failure[0] if failure else None


async def _pump(
    send: Send,
    parsed: ParsedRequest,
    stream: GenerationStream,
    progress: Progress,
    failure: list[str],
) -> bool:
    """Send the stream's events; False when the transport refused a write."""
    chat = parsed.endpoint == "chat.completions"
    base = response_base(parsed, chunk=True)
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
                        logprobs = chat_logprobs(parsed.engine, delta.logprobs)
                    else:
                        logprobs, offset = completion_logprobs(
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
            logger.error("generation stream %s failed", base["id"], exc_info=exc)
            failure.append(AiaasError.code)
            await emit(_event(error_payload(exc)[1]), more=False)
            return True
        if parsed.include_usage:
            await emit(_event({**base, "choices": [], "usage": usage(progress)}))
        await emit(_DONE, more=False)
    except OSError:  # uvicorn's ClientDisconnected: nobody is left to read
        return False
    return True
