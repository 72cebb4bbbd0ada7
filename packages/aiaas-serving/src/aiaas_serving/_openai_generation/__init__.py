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

from aiaas_serving._openai_generation._app import OpenAIGeneration
from aiaas_serving._openai_generation._outcome import GenerationOutcome

__all__ = ["GenerationOutcome", "OpenAIGeneration"]
