"""``TelemetryMiddleware``: request id, trace, metrics, access log and error bodies, in pure ASGI.

For every HTTP request it:

1. accepts the inbound ``X-Request-ID`` when well-formed (:func:`aiaas_core.accept_request_id`),
   else makes a fresh one, and returns it in the ``X-Request-ID`` response header;
2. extracts the inbound trace context (``traceparent``/``tracestate``/``baggage``) and opens one
   ``SERVER`` span named ``"{METHOD} {route template}"`` (``GET /v1/items/{id}``; an unknown route
   is ``GET <unmatched>``) -- no child spans for ``receive``/``send``;
3. runs the app inside :func:`aiaas_core.request_context` with the request, trace and span ids,
   so every log line the handler writes carries them (and the OTel context, so the handler's
   own spans are children of the server span);
4. records ``http_server_request_duration_seconds`` and ``http_server_active_requests``
   (method, route template, status class) and writes one access-log line (``aiaas.access``);
5. turns malformed requests and unhandled exceptions into the shared error body
   (:func:`aiaas_core.error_response`): a bad ``Content-Length`` is a 400, a body over
   ``max_body_bytes`` a 413 (refused from ``Content-Length`` before the app runs, or cut off while
   the app reads a chunked body), an :class:`aiaas_core.AiaasError` its own status, anything else a
   500 whose text and traceback stay in the server log (``aiaas.http``). Each is counted in
   ``http_server_errors_total`` by code. Paths under a prefix named in ``error_renderers`` get
   that renderer's body instead (``{"/v1/": openai_error_response}``: OpenAI's error shape);
6. treats a client that disconnected (the app saw ``http.disconnect``) before any response as
   what it is: no response is sent, nothing is logged as an error, and the request is counted
   with status 499 (nginx's "client closed request") and the code ``CLIENT_DISCONNECTED``.

Per-request work is kept small: every regular expression, label set, span name and metric child is
built once and cached; tracing headers are only parsed when present (a lone canonical
``traceparent``, what W3C tracers send, is parsed directly when the propagators are the default
``tracecontext``/``baggage``; the result is the propagator's); the span carries what a trace
needs (route, method, path, scheme, status, request id, user agent, actor) and leaves the rest --
the client address, the duration -- to the access-log line; and that line is written straight to
the JSON log handler from one template (:func:`aiaas_telemetry._logging.emit_access`) when
nothing else would see it.
"""

from __future__ import annotations

import logging
import math
import random
import re
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Protocol

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

from aiaas_core import (
    ASGIApp,
    BadRequestError,
    ErrorRenderer,
    ErrorRenderers,
    InternalError,
    Message,
    PayloadTooLargeError,
    Receive,
    Scope,
    Send,
    as_aiaas_error,
    error_response,
    request_context,
    set_trace,
)
from aiaas_telemetry._logging import AccessEntry, access_fields, emit_access
from aiaas_telemetry._routes import UNMATCHED, as_route_resolver, template_from_scope
from aiaas_telemetry._tracing import CountingBatchSpanProcessor, ServerSpans

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Tracer

    from aiaas_telemetry._metrics import TelemetryMetrics
    from aiaas_telemetry._profile import TelemetryProfile
    from aiaas_telemetry._routes import RouteResolver

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ErrorResponse", "TelemetryMiddleware", "error_handler"]

#: The default request body limit (10 MiB).
DEFAULT_MAX_BODY_BYTES: Final = 10 * 1024 * 1024

_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_STATUS_CLASSES: Final = ("5xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_CACHE_LIMIT: Final = 4096
# Access-log sampling draws from its own generator, never the application's global ``random``.
_SAMPLER: Final = random.Random()  # noqa: S311 -- sampling, not secrecy
_RENDERED: Final = "aiaas.error_rendered"
_ACCESS: Final = logging.getLogger("aiaas.access")
# A canonical version-00 ``traceparent`` (what every W3C tracer sends): parsed here directly when
# the propagators are the default ones; anything else goes through the propagator.
_TRACEPARENT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
# Propagator lists whose extraction from a lone ``traceparent`` is exactly _remote_parent's.
_PLAIN_PROPAGATORS: Final = frozenset({("tracecontext",), ("tracecontext", "baggage")})
_ERRORS: Final = logging.getLogger("aiaas.http")
#: The status and code a request is counted with when its client left before any response.
CLIENT_CLOSED_STATUS: Final = 499
CLIENT_DISCONNECTED: Final = "CLIENT_DISCONNECTED"


class TelemetryHandles(Protocol):
    """What :class:`TelemetryMiddleware` uses of a service's telemetry: a
    :class:`aiaas_telemetry.Telemetry` (what :func:`aiaas_telemetry.setup` returns)."""

    @property
    def profile(self) -> TelemetryProfile: ...

    @property
    def metrics(self) -> TelemetryMetrics: ...

    @property
    def propagator(self) -> TextMapPropagator: ...

    @property
    def tracer(self) -> Tracer | None: ...


def _remote_parent(traceparent: bytes) -> Context | None:
    """The context ``TraceContextTextMapPropagator.extract`` makes from this lone header value,
    when it is canonical (``None`` otherwise: ask the propagator)."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    remote = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
    )
    return set_span_in_context(NonRecordingSpan(remote), Context())


def _gauge_adder(child: Any) -> Callable[[float], None]:
    """``add(amount)`` for a labelled gauge child: ``child.inc(amount)`` (``dec`` is
    ``inc(-amount)``), straight on the child's value -- without the two checks ``inc`` repeats
    each call (a labelled child is always observable; its mode is never ``mostrecent``). The
    public method when the child is not built that way."""
    value = getattr(child, "_value", None)
    add = getattr(value, "inc", None)
    if add is None or getattr(child, "_is_most_recent", True):
        return child.inc  # type: ignore[no-any-return]
    return add  # type: ignore[no-any-return]


def _observer(child: Any) -> Callable[[float], None]:
    """``child.observe`` for a labelled histogram child: the same sum and bucket counts,
    the bucket found by bisection instead of ``observe``'s scan and checks. The public method
    when the child is not built that way. (A duration is never NaN, which ``observe`` would
    count in no bucket.)"""
    try:
        add_sum = child._sum.inc
        bounds = tuple(child._upper_bounds)
        buckets = tuple(bucket.inc for bucket in child._buckets)
    except (AttributeError, TypeError):
        return child.observe  # type: ignore[no-any-return]
    if not bounds or len(bounds) != len(buckets) or bounds[-1] != math.inf:
        return child.observe  # type: ignore[no-any-return]

    def observe(amount: float) -> None:
        add_sum(amount)
        buckets[bisect_left(bounds, amount)](1)

    return observe


def _content_length(value: bytes) -> int | None:
    if not value or len(value) > 19 or not value.isdigit():
        return None
    return int(value)


class TelemetryMiddleware:
    """Pure-ASGI telemetry for one application (see the module documentation).

    ``routes`` resolves route templates: a list of templates, the app's router (or an app with a
    ``router``), or a callable ``scope -> template | None``; with none given, a template is read
    from ``scope["route"]`` after the app ran (Starlette/FastAPI). ``exclude_paths`` get only the
    request id (no span, metrics or access log): health probes, for instance. ``metrics_path``
    (for example ``"/metrics"``) is answered by the service's Prometheus endpoint directly.
    ``max_body_bytes`` (``None``: no limit) bounds request bodies. ``problem_details=True``
    renders errors as RFC 7807 ``application/problem+json`` instead of the shared error body;
    ``error_renderers`` maps path prefixes to renderers for the errors of the paths under them
    (the longest matching prefix wins).
    """

    __slots__ = (
        "_active",
        "_active_children",
        "_duration",
        "_duration_children",
        "_error_children",
        "_errors",
        "_exclude",
        "_fast_traceparent",
        "_max_body",
        "_metrics_app",
        "_metrics_path",
        "_names",
        "_problem",
        "_propagator",
        "_renderers",
        "_resolver",
        "_sample",
        "_spans",
        "_trace_fields",
        "_tracer",
        "access_log",
        "app",
    )

    def __init__(
        self,
        app: ASGIApp,
        telemetry: TelemetryHandles,
        *,
        routes: RouteResolver | Collection[str] | Any | None = None,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        exclude_paths: Collection[str] = (),
        metrics_path: str | None = None,
        access_log: bool = True,
        problem_details: bool = False,
        error_renderers: Mapping[str, ErrorRenderer] | ErrorRenderers | None = None,
    ) -> None:
        if max_body_bytes is not None and max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0 or None, got {max_body_bytes!r}")
        self.app = app
        self._tracer = telemetry.tracer
        # Our server spans, recorded light while our batch processor is the only one.
        provider = getattr(telemetry, "tracer_provider", None)
        processor = getattr(telemetry, "span_processor", None)
        self._spans = (
            ServerSpans(provider, self._tracer, processor)
            if self._tracer is not None
            and isinstance(provider, TracerProvider)
            and isinstance(processor, CountingBatchSpanProcessor)
            else None
        )
        self._propagator = telemetry.propagator
        # The tracing headers are only read when there is a span to continue the trace in.
        self._trace_fields = frozenset(
            f.lower().encode("latin-1")
            for f in (telemetry.propagator.fields if self._tracer is not None else ())
        )
        self._fast_traceparent = (
            tuple(telemetry.profile.tracing.propagators) in _PLAIN_PROPAGATORS
            and b"traceparent" in self._trace_fields
        )
        metrics = telemetry.metrics
        self._duration = metrics.request_duration
        self._active = metrics.active_requests
        self._errors = metrics.errors
        self._resolver = as_route_resolver(routes)
        self._max_body = max_body_bytes
        self._exclude = frozenset(exclude_paths)
        self._metrics_path = metrics_path
        self._metrics_app = metrics.app() if metrics_path else None
        self.access_log = access_log
        self._sample = telemetry.profile.log.sampling_rate
        self._problem = problem_details
        self._renderers = ErrorRenderers(error_renderers)
        self._names: dict[tuple[str, str], str] = {}
        self._duration_children: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self._active_children: dict[tuple[str, str], Callable[[float], None]] = {}
        self._error_children: dict[tuple[str, str, str], Any] = {}

    # ------------------------------------------------------------------ cached metric children

    def _span_name(self, method: str, route: str) -> str:
        key = (method, route)
        name = self._names.get(key)
        if name is None:
            name = f"{method} {route}"
            if len(self._names) < _CACHE_LIMIT:
                self._names[key] = name
        return name

    def _active_child(self, method: str, route: str) -> Callable[[float], None]:
        """The in-flight gauge's ``add(amount)`` for these labels (see :func:`_gauge_adder`)."""
        key = (method, route)
        child = self._active_children.get(key)
        if child is None:
            child = _gauge_adder(self._active.labels(method, route))
            if len(self._active_children) < _CACHE_LIMIT:
                self._active_children[key] = child
        return child

    def _duration_child(
        self, method: str, route: str, status_class: str
    ) -> Callable[[float], None]:
        """The duration histogram's ``observe`` for these labels (see :func:`_observer`)."""
        key = (method, route, status_class)
        child = self._duration_children.get(key)
        if child is None:
            child = _observer(self._duration.labels(method, route, status_class))
            if len(self._duration_children) < _CACHE_LIMIT:
                self._duration_children[key] = child
        return child

    def _error_child(self, method: str, route: str, code: str) -> Any:
        key = (method, route, code)
        child = self._error_children.get(key)
        if child is None:
            child = self._errors.labels(method, route, code)
            if len(self._error_children) < _CACHE_LIMIT:
                self._error_children[key] = child
        return child

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == self._metrics_path and self._metrics_app is not None:
            await self._metrics_app(scope, receive, send)
            return
        if path in self._exclude:
            await self._untraced(scope, receive, send)
            return
        # The traced request, in this frame (one coroutine less per request).
        start = perf_counter()
        raw_method: str = scope["method"]
        method = raw_method if raw_method in _KNOWN_METHODS else "_OTHER"

        rid_raw: bytes | None = None
        traceparent: bytes | None = None  # a lone traceparent, kept raw for _remote_parent
        carrier: dict[str, str] | None = None
        length_header: bytes | None = None
        chunked = False
        user_agent: bytes | None = None
        bad_header: str | None = None
        trace_fields = self._trace_fields
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid_raw = value
            elif name in trace_fields:
                if carrier is None:
                    carrier = {}
                    traceparent = value if name == b"traceparent" else None
                else:
                    traceparent = None
                carrier[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"content-length":
                if length_header is not None and value != length_header:
                    bad_header = "conflicting Content-Length headers"
                length_header = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"user-agent":
                user_agent = value

        max_body = self._max_body
        declared: int | None = None
        if length_header is not None and bad_header is None:
            declared = _content_length(length_header)
            if declared is None:
                bad_header = "Content-Length must be a non-negative integer"

        template: str | None = None
        if self._resolver is not None:
            try:
                template = self._resolver(scope)
            except Exception:  # noqa: BLE001 -- a resolver bug must not fail the request
                _ERRORS.warning("route resolver failed for %s", path, exc_info=True)
        route = template or UNMATCHED
        agent = None if user_agent is None else user_agent.decode("latin-1")

        with request_context(rid_raw) as rid:
            rid_header = (b"x-request-id", rid.encode("ascii"))
            tracer = self._tracer
            span: Any = None
            token: object = None
            trace_id: str | None = None
            span_id: str | None = None
            if tracer is not None:
                parent: Context | None = None
                if traceparent is not None and self._fast_traceparent:
                    parent = _remote_parent(traceparent)
                if parent is None and carrier:
                    parent = self._propagator.extract(carrier)
                attributes: dict[str, Any] = {
                    "http.request.method": raw_method,
                    "url.path": path,
                    "url.scheme": scope.get("scheme", "http"),
                    "aiaas.request_id": rid,
                }
                if template is not None:
                    attributes["http.route"] = template
                if agent is not None:
                    attributes["user_agent.original"] = agent
                name = self._span_name(method, route)
                span = (
                    tracer.start_span(
                        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
                    )
                    if self._spans is None
                    else self._spans.start(name, parent, attributes)
                )
                span_context = span.get_span_context()
                trace_id = format(span_context.trace_id, "032x")
                span_id = format(span_context.span_id, "016x")
                set_trace(trace_id, span_id)
                token = otel_context.attach(set_span_in_context(span, parent))

            active = self._active_children.get((method, route)) or self._active_child(method, route)
            active(1.0)
            status = 0
            started = False
            rejected = False
            error_code: str | None = None

            async def send_wrapper(message: Message) -> None:
                nonlocal status, started
                if rejected:
                    return  # we already answered 413; the app's response goes nowhere
                if message["type"] == "http.response.start":
                    started = True
                    status = message["status"]
                    message = {**message, "headers": [*message.get("headers", ()), rid_header]}
                await send(message)

            disconnected = False

            async def watched_receive() -> Message:
                nonlocal disconnected
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                return message

            app_receive = watched_receive
            if max_body is not None and declared is None and (chunked or raw_method != "GET"):
                received = 0

                async def limited_receive() -> Message:
                    nonlocal received, rejected, status, started, error_code, disconnected
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        disconnected = True
                    elif message["type"] == "http.request" and not rejected:
                        received += len(message.get("body", b""))
                        if received > max_body:
                            rejected = True
                            if not started:
                                started = True
                                exc = PayloadTooLargeError(
                                    f"Request body too large: the limit is {max_body} bytes"
                                )
                                error_code = exc.code
                                status = await self._send_error(send, exc, rid_header, path)
                    if rejected:
                        return {"type": "http.disconnect"}
                    return message

                app_receive = limited_receive

            try:
                if bad_header is not None:
                    raise BadRequestError(
                        f"Malformed request header: {bad_header}", code="REQUEST_HEADER_INVALID"
                    )
                if declared is not None and max_body is not None and declared > max_body:
                    raise PayloadTooLargeError(
                        f"Request body too large: {declared} bytes, the limit is {max_body} bytes"
                    )
                await self.app(scope, app_receive, send_wrapper)
                if not started:
                    if disconnected:  # nobody is left to answer: not a server error
                        error_code = CLIENT_DISCONNECTED
                        status = CLIENT_CLOSED_STATUS
                    else:
                        _ERRORS.error(
                            "%s %s: the application returned without a response",
                            raw_method,
                            path,
                        )
                        error_code = "INTERNAL_ERROR"
                        started = True
                        status = await self._send_error(send, InternalError(), rid_header, path)
            except Exception as exc:  # noqa: BLE001 -- rendered as the error body, logged
                if not rejected:  # after a 413 the app's failure to read the body is expected
                    err = as_aiaas_error(exc)
                    error_code = err.code
                    rendered = scope.get(_RENDERED) is exc  # a framework handler answered already
                    if started and not rendered:
                        _ERRORS.error(
                            "unhandled exception in %s %s after the response started;"
                            " the response is cut short",
                            raw_method,
                            path,
                            exc_info=exc,
                        )
                        status = 500  # the client got a broken response: count it as one
                    elif err.status >= 500:
                        _ERRORS.error(
                            "unhandled exception in %s %s", raw_method, path, exc_info=exc
                        )
                    if span is not None and (started or err.status >= 500):
                        span.record_exception(exc)
                    if not started:
                        started = True
                        status = await self._send_error(send, err, rid_header, path)
            finally:
                duration = perf_counter() - start
                if status == 0:
                    if disconnected:
                        status = CLIENT_CLOSED_STATUS  # cancelled after its client left
                        error_code = error_code or CLIENT_DISCONNECTED
                    else:
                        status = 500  # cancelled before any response
                if template is None:
                    found = template_from_scope(scope)
                    if found is not None:
                        template = found
                        route_after = found
                        if span is not None:
                            span.update_name(self._span_name(method, route_after))
                            span.set_attribute("http.route", found)
                    else:
                        route_after = route
                else:
                    route_after = route
                active(-1.0)
                index = status // 100
                status_class = _STATUS_CLASSES[index] if 0 < index < 6 else "5xx"
                observe = self._duration_children.get((method, route_after, status_class))
                if observe is None:
                    observe = self._duration_child(method, route_after, status_class)
                observe(duration)
                if error_code is not None:
                    self._error_child(method, route_after, error_code).inc()
                # AuthMiddleware (inside) restores the actor context var on its way out but
                # leaves the authenticated actor in the scope.
                actor = scope.get("aiaas.actor")
                subject: str | None = getattr(actor, "subject", None)
                if span is not None:
                    if subject is None:
                        span.set_attribute("http.response.status_code", status)
                    else:
                        span.set_attributes(
                            {"http.response.status_code": status, "aiaas.actor.subject": subject}
                        )
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                    span.end()
                    otel_context.detach(token)  # type: ignore[arg-type]
                if (
                    self.access_log
                    and (status >= 400 or self._sample >= 1.0 or _SAMPLER.random() < self._sample)
                    and _ACCESS.isEnabledFor(logging.INFO)
                ):
                    # The ids are the request context's: passed on so the line is written
                    # without reading the context again (the actor's was reset by then).
                    entry: AccessEntry = (
                        raw_method,
                        path,
                        route_after,
                        status,
                        round(duration * 1000.0, 3),
                        scope.get("client"),
                        agent,
                        error_code,
                    )
                    ids = (rid, trace_id, span_id, subject)
                    if not emit_access(_ACCESS, entry, ids):
                        _ACCESS.info(
                            "%s %s %d",
                            raw_method,
                            path,
                            status,
                            extra=access_fields(entry, ids, with_ids=False),
                        )

    async def _send_error(
        self, send: Send, exc: BaseException, rid_header: tuple[bytes, bytes], path: str
    ) -> int:
        renderer = self._renderers.for_path(path)
        if renderer is None:
            status, headers, body = error_response(exc, problem=self._problem)
        else:
            status, headers, body = renderer(as_aiaas_error(exc))
        headers.append(rid_header)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _untraced(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid_raw = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid_raw = value
                break
        with request_context(rid_raw) as rid:
            rid_header = (b"x-request-id", rid.encode("ascii"))
            started = False

            async def send_with_id(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    message = {**message, "headers": [*message.get("headers", ()), rid_header]}
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:  # noqa: BLE001 -- rendered as the error body, logged
                err = as_aiaas_error(exc)
                if err.status >= 500:
                    _ERRORS.error("unhandled exception in %s", scope["path"], exc_info=exc)
                if not started:
                    await self._send_error(send, err, rid_header, scope["path"])


class ErrorResponse:
    """An ASGI response carrying ``exc`` as the shared error body (or RFC 7807 with ``problem``).

    What :func:`error_handler` returns; usable wherever a framework accepts an ASGI app as a
    response. Request and trace ids come from the request context.
    """

    __slots__ = ("body", "exc", "headers", "status")

    def __init__(self, exc: BaseException, *, problem: bool = False) -> None:
        self.exc = exc
        self.status, self.headers, self.body = error_response(exc, problem=problem)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_RENDERED] = self.exc
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def error_handler(request: object, exc: BaseException) -> ErrorResponse:
    """An exception handler for Starlette and FastAPI that answers with the shared error body.

    ``Starlette(..., exception_handlers={Exception: error_handler})``: Starlette would otherwise
    answer an unhandled exception with a plain-text 500. Register it for
    :class:`aiaas_core.AiaasError` too, so a raised ``NotFoundError`` and the like keep their
    status. :class:`TelemetryMiddleware` still logs the traceback and counts the error.
    """
    return ErrorResponse(exc)
