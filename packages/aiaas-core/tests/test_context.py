from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import (
    Actor,
    accept_request_id,
    get_actor,
    get_request_id,
    get_span_id,
    get_trace_id,
    new_request_id,
    request_context,
    set_actor,
    set_trace,
)
from aiaas_core._context import REQUEST_ID_PATTERN

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_new_request_ids_are_unique_and_well_formed() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(REQUEST_ID_PATTERN.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    "good",
    ["abcdefgh", "req-12345678", "0af7651916cd43dd8448eb211c80319c", "a" * 128, "a.b_c:d-e9"],
)
def test_well_formed_inbound_ids_are_kept(good: str) -> None:
    assert accept_request_id(good) == good
    assert accept_request_id(good.encode()) == good


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "short",
        "a" * 129,
        "has space 123",
        "-leading-dash",
        "new\nline1234",
        "ünïcödé1234",
        b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8",
        "x" * 10_000,
    ],
)
def test_malformed_inbound_ids_are_replaced(bad: str | bytes | None) -> None:
    rid = accept_request_id(bad)
    assert rid != bad
    assert REQUEST_ID_PATTERN.fullmatch(rid)


@given(st.text(max_size=300))
def test_accepted_ids_are_always_safe_for_logs(value: str) -> None:
    rid = accept_request_id(value)
    assert REQUEST_ID_PATTERN.fullmatch(rid)
    assert rid == value or len(rid) == 32


def test_request_context_sets_and_restores() -> None:
    actor = Actor("svc-a", ["platform-engineer"], kind="service")
    assert get_request_id() is None
    with request_context("outer-123456", trace_id=TRACE, span_id=SPAN, actor=actor) as rid:
        assert rid == "outer-123456"
        assert (get_request_id(), get_trace_id(), get_span_id(), get_actor()) == (
            rid,
            TRACE,
            SPAN,
            actor,
        )
        with request_context(None) as inner:
            assert get_request_id() == inner != rid
            assert get_actor() is None
        assert get_request_id() == rid
        assert get_actor() == actor
    assert (get_request_id(), get_trace_id(), get_span_id(), get_actor()) == (
        None,
        None,
        None,
        None,
    )


def test_set_actor_and_set_trace_inside_a_request() -> None:
    with request_context():
        set_actor(Actor("u1", ("read-only",)))
        set_trace(TRACE, SPAN)
        assert get_actor() == Actor("u1", ("read-only",))
        assert get_trace_id() == TRACE
    assert get_actor() is None


@pytest.mark.parametrize(("trace", "span"), [("XYZ", None), (TRACE.upper(), None), (TRACE, "123")])
def test_malformed_trace_ids_are_refused(trace: str, span: str | None) -> None:
    with pytest.raises(ValueError, match="hex"):
        set_trace(trace, span)
    with pytest.raises(ValueError, match="hex"), request_context(trace_id=trace, span_id=span):
        pass


async def test_concurrent_requests_do_not_see_each_other() -> None:
    async def handle(n: int) -> tuple[str, str | None, str]:
        with request_context(f"request-{n:04d}", actor=Actor(f"user-{n}", ("app-team",))) as rid:
            await asyncio.sleep(0.001 * (n % 3))
            actor = get_actor()
            assert actor is not None
            return rid, get_request_id(), actor.subject

    results = await asyncio.gather(*(handle(n) for n in range(50)))
    for n, (rid, seen, subject) in enumerate(results):
        assert rid == seen == f"request-{n:04d}"
        assert subject == f"user-{n}"


def _failing_request() -> None:
    with request_context("inner-123456"):
        set_trace("a" * 32, "b" * 16)
        set_actor(Actor("u2", ("reader",)))
        raise RuntimeError("boom")


def test_request_context_restores_on_error_and_after_setters() -> None:
    with request_context("outer-123456", trace_id=TRACE):
        with pytest.raises(RuntimeError, match="boom"):
            _failing_request()
        assert (get_request_id(), get_trace_id(), get_span_id(), get_actor()) == (
            "outer-123456",
            TRACE,
            None,
            None,
        )
    assert (get_request_id(), get_trace_id(), get_span_id(), get_actor()) == (None,) * 4


async def test_setters_in_a_task_leave_the_parent_context_alone() -> None:
    with request_context("parent-123456", trace_id=TRACE, span_id=SPAN):

        async def child() -> tuple[str | None, str | None]:
            set_trace("a" * 32, "b" * 16)
            set_actor(Actor("task-user", ("reader",)))
            return get_trace_id(), get_request_id()

        assert await asyncio.create_task(child()) == ("a" * 32, "parent-123456")
        assert (get_trace_id(), get_span_id(), get_actor()) == (TRACE, SPAN, None)


def test_request_context_as_a_decorator_sets_a_fresh_context_per_call() -> None:
    seen: list[tuple[str | None, str | None]] = []

    @request_context("decorated-1234", trace_id=TRACE)
    def handler(depth: int) -> None:
        seen.append((get_request_id(), get_trace_id()))
        set_trace(None)
        if depth:
            handler(depth - 1)  # re-entered: its own context, restored on the way out
        seen.append((get_request_id(), get_trace_id()))

    handler(1)
    handler(0)
    assert seen == [
        ("decorated-1234", TRACE),
        ("decorated-1234", TRACE),
        ("decorated-1234", None),
        ("decorated-1234", None),
        ("decorated-1234", TRACE),
        ("decorated-1234", None),
    ]
    assert get_request_id() is None


def test_actor_validation() -> None:
    assert Actor("u", "admin").roles == ("admin",)
    assert Actor("u", {"b", "a"}).roles == ("a", "b")
    with pytest.raises(ValueError, match="subject"):
        Actor("  ", ("admin",))
    with pytest.raises(ValueError, match="roles"):
        Actor("u", ("",))
    with pytest.raises(TypeError, match="roles"):
        Actor("u", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        Actor("u", ("admin",), kind="robot")  # type: ignore[arg-type]


def test_actor_scopes_default_empty_and_narrow_only_when_present() -> None:
    plain = Actor("u", ("developer",))
    assert plain.scopes == ()
    assert plain.has_scope("anything:at-all")  # no scopes: the roles alone decide
    scoped = Actor("k", ("developer",), kind="api_key", scopes={"b:read", "a:read"})
    assert scoped.scopes == ("a:read", "b:read")
    assert scoped.has_scope("a:read")
    assert not scoped.has_scope("c:write")
    assert Actor("k", (), scopes="*").has_scope("c:write")
    with pytest.raises(ValueError, match="scopes must be a tuple of non-empty names"):
        Actor("u", (), scopes=("",))
    with pytest.raises(TypeError, match="roles must be a sequence"):
        Actor("u", (), scopes=5)  # type: ignore[arg-type]
