"""Request parsing and validation: the JSON body to a :class:`ParsedRequest`, then to the
engine's prompt token ids and sampling parameters (the context checked)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from aiaas_core import BadRequestError
from aiaas_serving._errors import InvalidInput, ModelNotFound
from aiaas_serving._http import ParamError
from aiaas_serving._openai_generation._outcome import Endpoint, Progress

if TYPE_CHECKING:
    from aiaas_serving.generation import GenerationEngine, SamplingParams

__all__ = [
    "INLINE_CHARS",
    "ParsedRequest",
    "find_engine",
    "parse_request",
    "sampling_params",
    "tokenize",
]

INLINE_CHARS: Final = 1000  # prompts shorter than this are templated/tokenised on the loop
_MAX_STOP: Final = 4
_MAX_LOGPROBS: Final = 20
_COMPLETIONS_DEFAULT_MAX_TOKENS: Final = 16  # OpenAI's default for /v1/completions
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


@attrs.frozen
class ParsedRequest:
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


def find_engine(engines: Mapping[str, GenerationEngine], public: str) -> GenerationEngine:
    """The engine serving the public model id ``public`` (404 ``model_not_found`` if none)."""
    engine = engines.get(public)
    if engine is None:
        raise _UnknownModelError(f"the model {public!r} does not exist", model=public)
    return engine


def parse_request(
    request: dict[str, Any],
    endpoint: Endpoint,
    progress: Progress,
    lookup: Callable[[str], GenerationEngine],
) -> ParsedRequest:
    """Validate a request body: the :class:`ParsedRequest`, or a 400 naming the parameter (a
    404 for a model ``lookup`` does not know); ``progress`` gets the model and ``stream`` as
    soon as they are known."""
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
    found = lookup(public)
    return ParsedRequest(
        endpoint=endpoint,
        public=public,
        engine=found,
        messages=messages,
        prompt_text=prompt_text,
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        params=params,
        stream=stream,
        include_usage=include_usage,
        logprobs=logprobs,
    )


def tokenize(parsed: ParsedRequest) -> list[int]:
    """The prompt's token ids: given, or the chat rendered by the template and tokenised."""
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


def sampling_params(parsed: ParsedRequest, prompt_ids: list[int]) -> SamplingParams:
    """The engine's sampling parameters: a 400 ``context_length_exceeded`` when the prompt and
    the tokens asked for do not fit the context."""
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


def _context(engine: GenerationEngine) -> int:
    """The longest sequence ``engine`` serves: the model's context length, or what its whole KV
    cache holds when that is less (a request is never admitted beyond it)."""
    capacity = engine.num_blocks * engine.options.block_size
    return min(engine.max_model_len, capacity)


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
