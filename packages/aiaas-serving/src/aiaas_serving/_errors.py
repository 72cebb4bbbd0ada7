"""The typed outcomes of a serving request that did not produce a result.

Every request the runtime accepts ends with exactly one outcome: its result, or one of these
errors. Each is an :class:`aiaas_core.AiaasError` with a stable machine code and the HTTP status
it maps to, so an ASGI handler renders it without a lookup table::

    ServingError (mixin)
    ├── Overloaded          MODEL_OVERLOADED     429  RateLimitedError, with retry_after
    ├── DeadlineExceeded    DEADLINE_EXCEEDED    504  GatewayTimeoutError
    ├── Cancelled           REQUEST_CANCELLED    499  (the client went away)
    ├── InputTooLarge       INPUT_TOO_LARGE      413  PayloadTooLargeError
    ├── InvalidInput        INPUT_INVALID        422  ValidationError
    ├── ModelError          MODEL_ERROR          500  InternalError, safe message
    ├── ModelNotFound       MODEL_NOT_FOUND      404  NotFoundError
    └── ShuttingDown        SHUTTING_DOWN        503  ServiceUnavailableError

Messages are safe to show a client: they never carry the model's own exception text (that is
chained as ``__cause__`` and logged server-side). ``GatewayTimeoutError`` is aiaas-core's (the one
error tree), exported here too as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiaas_core import (
    AiaasError,
    GatewayTimeoutError,
    InternalError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServiceUnavailableError,
    ValidationError,
)

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "GatewayTimeoutError",
    "InputTooLarge",
    "InvalidInput",
    "ModelError",
    "ModelNotFound",
    "Overloaded",
    "ServingError",
    "ShuttingDown",
]


class ServingError(AiaasError):
    """Mixin base of every serving outcome error: ``except ServingError`` catches them all.

    ``model`` is the model's name; ``index`` the position of the input that failed when several
    were admitted together (``enqueue_many``; ``None`` otherwise).
    """

    index: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        model: str | None = None,
        detail: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        super().__init__(message, detail=detail, code=code, headers=headers)


class Overloaded(ServingError, RateLimitedError):  # noqa: N818 -- the serving API names outcomes
    """The model's queue is full; the request was refused at once, before any work."""

    code = "MODEL_OVERLOADED"
    title = "Model overloaded"

    def __init__(
        self,
        message: str | None = None,
        *,
        model: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        self.model = model
        RateLimitedError.__init__(
            self,
            message,
            retry_after=retry_after,
            detail=detail,
            code=code,
        )


class DeadlineExceeded(ServingError, GatewayTimeoutError):  # noqa: N818 -- the serving API names outcomes
    """The request's deadline passed before it had a result; queued requests never ran."""

    code = "DEADLINE_EXCEEDED"
    status = 504  # GatewayTimeoutError's, spelled out: the class says what it answers
    title = "Deadline exceeded"


class Cancelled(ServingError):  # noqa: N818 -- the serving API names outcomes
    """The request was cancelled by its caller; its result, if computed, was discarded."""

    code = "REQUEST_CANCELLED"
    status = 499  # nginx's "client closed request": nobody is left to read it
    title = "Request cancelled"


class InputTooLarge(ServingError, PayloadTooLargeError):  # noqa: N818 -- the serving API names outcomes
    """The input can never fit the model's limits (length, token budget): refused at once.

    ``tokens`` is the input's length and ``limit`` the most the model accepts, when known.
    """

    code = "INPUT_TOO_LARGE"
    title = "Input too large"

    def __init__(
        self,
        message: str | None = None,
        *,
        model: str | None = None,
        tokens: int | None = None,
        limit: int | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        self.tokens = tokens
        self.limit = limit
        super().__init__(message, model=model, detail=detail, code=code)


class InvalidInput(ServingError, ValidationError):  # noqa: N818 -- the serving API names outcomes
    """The model adapter rejected the input (wrong type, shape or content)."""

    code = "INPUT_INVALID"
    title = "Invalid input"


class ModelError(ServingError, InternalError):
    """The model failed on this request (after isolating it from the rest of its batch)."""

    code = "MODEL_ERROR"
    title = "Model error"


class ModelNotFound(ServingError, NotFoundError):  # noqa: N818 -- the serving API names outcomes
    """No model of that name is served by this runtime."""

    code = "MODEL_NOT_FOUND"
    title = "Model not found"


class ShuttingDown(ServingError, ServiceUnavailableError):  # noqa: N818 -- the serving API names outcomes
    """The runtime is draining or closed and accepts no new requests."""

    code = "SHUTTING_DOWN"
    title = "Shutting down"

    def __init__(
        self,
        message: str | None = None,
        *,
        model: str | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> None:
        self.model = model
        ServiceUnavailableError.__init__(
            self,
            message,
            retry_after=retry_after,
            detail=detail,
            code=code,
        )
