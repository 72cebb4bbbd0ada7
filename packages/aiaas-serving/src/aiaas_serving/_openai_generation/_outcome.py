"""How a generation call ended (:class:`GenerationOutcome`) and what it got to on its way."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["Endpoint", "GenerationOutcome", "Progress", "usage"]

Endpoint = Literal["chat.completions", "completions"]


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


class Progress:
    """What a generation call got to, filled in as it goes."""

    __slots__ = ("completion", "finish_reason", "model", "prompt", "status", "stream")

    def __init__(self) -> None:
        self.model: str | None = None
        self.prompt = 0
        self.completion = 0
        self.status: int | None = None
        self.finish_reason: str | None = None
        self.stream = False


def usage(progress: Progress) -> dict[str, int]:
    """OpenAI's ``usage`` object of what ``progress`` got to."""
    return {
        "prompt_tokens": progress.prompt,
        "completion_tokens": progress.completion,
        "total_tokens": progress.prompt + progress.completion,
    }
