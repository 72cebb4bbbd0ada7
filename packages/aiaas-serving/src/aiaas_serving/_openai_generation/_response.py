"""The non-streaming answer: a ``chat.completion`` or ``text_completion`` object, and the
pieces the streamed chunks share with it (the object's head, log probabilities, JSON)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiaas_core import Receive, Send
from aiaas_serving._http import JSON_HEADER, finished_before_disconnect, send_response
from aiaas_serving._openai_generation._outcome import Progress, usage
from aiaas_serving._openai_generation._request import ParsedRequest

if TYPE_CHECKING:
    from aiaas_serving.generation import GenerationEngine, GenerationStream, TokenLogprob

__all__ = ["chat_logprobs", "complete", "completion_logprobs", "response_base", "to_json"]


def _token_text(engine: GenerationEngine, token_id: int) -> str:
    return str(engine.tokenizer.token_text(token_id))


def chat_logprobs(engine: GenerationEngine, logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
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


def completion_logprobs(
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


def to_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def response_base(parsed: ParsedRequest, *, chunk: bool) -> dict[str, Any]:
    """The head of an answer object (or of every chunk of a streamed one): a new ``id``
    (``chatcmpl-...`` / ``cmpl-...``), ``object``, ``created``, ``model``."""
    if parsed.endpoint == "chat.completions":
        kind, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl"
    else:
        kind, prefix = "text_completion", "cmpl"
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": parsed.public,
        "system_fingerprint": None,
    }


async def complete(
    send: Send,
    receive: Receive,
    parsed: ParsedRequest,
    *,
    stream: GenerationStream,
    request_id: str | None,
    progress: Progress,
) -> None:
    work = asyncio.ensure_future(stream.result())
    if not await finished_before_disconnect(work, receive, stream.cancel):
        return  # the client went away first
    result = work.result()
    progress.completion = result.completion_tokens
    progress.finish_reason = result.finish_reason
    chat = parsed.endpoint == "chat.completions"
    payload = response_base(parsed, chunk=False)
    logprobs: dict[str, Any] | None = None
    if parsed.logprobs is not None and result.logprobs is not None:
        if chat:
            logprobs = chat_logprobs(parsed.engine, result.logprobs)
        else:
            logprobs, _ = completion_logprobs(parsed.engine, result.logprobs, 0)
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
    payload["usage"] = usage(progress)
    progress.status = 200
    await send_response(send, 200, [JSON_HEADER], to_json(payload), request_id)
