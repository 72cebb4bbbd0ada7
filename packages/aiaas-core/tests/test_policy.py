"""Policies: permission grammar, decisions (deny overrides, default deny), bundles and loading."""

from __future__ import annotations

import fnmatch
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiaas_core import (
    Actor,
    ConfigError,
    Decision,
    PermissionDeniedError,
    Policy,
    PolicyBundle,
    PolicyError,
    PolicyRule,
    _policy,
    load_policy_bundle,
)

EXAMPLE_YAML = """\
name: platform-rbac
version: "2024.05.1"
author: platform-team@example.com
created_at: "2024-05-01T12:00:00Z"
description: Access to the platform APIs
rules:
  - id: r1
    effect: allow
    roles: [platform-engineer]
    permissions: ["*"]
    description: Platform engineers may do everything
  - id: r2
    effect: allow
    roles: [app-team, read-only]
    permissions: ["environments:read", "handoff:env-*"]
  - id: r3
    effect: deny
    roles: ["*"]
    permissions: ["handoff:env-production"]
  - effect: allow
    roles: [app-team]
    permissions: ["migrations:*"]
"""


def allow(
    *permissions: str, roles: tuple[str, ...] = ("app-team",), id: str | None = None
) -> PolicyRule:
    return PolicyRule(effect="allow", roles=roles, permissions=permissions, id=id)


def deny(
    *permissions: str, roles: tuple[str, ...] = ("app-team",), id: str | None = None
) -> PolicyRule:
    return PolicyRule(effect="deny", roles=roles, permissions=permissions, id=id)


def bundle_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "rbac",
        "version": 1,
        "author": "platform team",
        "created_at": "2024-05-01T12:00:00Z",
        "rules": [{"id": "r1", "effect": "allow", "roles": ["app-team"], "permissions": ["a:b"]}],
    }
    data.update(overrides)
    return data


def problems_of(source: Any, **kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as info:
        load_policy_bundle(source, **kwargs)
    return info.value.problems


# --------------------------------------------------------------------------- permission grammar

VALID_PATTERNS = [
    "*",
    "*:*",
    "environments:read",
    "environments:*",
    "*:read",
    "handoff:env-*",
    "env*:read",
    "api-keys:v1.2_x",
    "A9:Z0",
    "a:" + "b" * 128,
    "a:" + "b" * 128 + "*",
]
INVALID_PATTERNS = [
    ("environments", "is not action:resource"),
    ("", "is not action:resource"),
    ("a:b:c", "is not action:resource"),
    (":read", "has an empty action"),
    ("read:", "has an empty resource"),
    ("a:*b", "resource '*b' is not a name or wildcard"),
    ("a:e*v", "resource 'e*v' is not a name or wildcard"),
    ("a:**", "resource '**' is not a name or wildcard"),
    ("*-prod:a", "action '*-prod' is not a name or wildcard"),
    ("-a:b", "action '-a' is not a name or wildcard"),
    ("a b:c", "action 'a b' is not a name or wildcard"),
    ("a:b/c", "resource 'b/c' is not a name or wildcard"),
    ("a:é", "resource 'é' is not a name or wildcard"),
    ("a:" + "b" * 129, "the resource is longer than 128 characters"),
]


@pytest.mark.parametrize("pattern", VALID_PATTERNS)
def test_valid_permission_patterns_are_accepted(pattern: str) -> None:
    assert allow(pattern).permissions == (pattern,)


@pytest.mark.parametrize(("pattern", "message"), INVALID_PATTERNS)
def test_invalid_permission_patterns_are_rejected_with_the_reason(
    pattern: str, message: str
) -> None:
    with pytest.raises(ValueError, match="permissions\\[0\\]: ") as info:
        allow(pattern)
    assert message in str(info.value)


SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


@given(st.text(alphabet="ab:*.-_ é/", max_size=8))
def test_pattern_validation_agrees_with_the_documented_grammar(text: str) -> None:
    import re

    seg = rf"(\*|{SEGMENT}\*?)"
    expected = re.fullmatch(rf"\*|{seg}:{seg}", text) is not None
    assert (_policy._permission_problem(text) is None) is expected


@pytest.mark.parametrize(
    ("pattern", "action", "resource", "matches"),
    [
        ("*", "anything", "at-all", True),
        ("*:*", "a", "b", True),
        ("environments:*", "environments", "read", True),
        ("environments:*", "environment", "read", False),
        ("*:read", "migrations", "read", True),
        ("*:read", "migrations", "reader", False),
        ("handoff:env-*", "handoff", "env-staging", True),
        ("handoff:env-*", "handoff", "env-", True),
        ("handoff:env-*", "handoff", "env", False),
        ("handoff:env-*", "handoffs", "env-x", False),
        ("env*:read", "environments", "read", True),
        ("environments:read", "environments", "read", True),
        ("environments:read", "Environments", "read", False),
        ("environments:read", "environments", "read-all", False),
    ],
)
def test_pattern_matching(pattern: str, action: str, resource: str, matches: bool) -> None:
    policy = Policy([allow(pattern, id="r")])
    assert policy.decide("app-team", action, resource).allowed is matches


# --------------------------------------------------------------------------- rules and policies


def test_rule_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="effect: must be 'allow' or 'deny', got 'permit'"):
        PolicyRule(effect="permit", roles=("a",), permissions=("a:b",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a list or tuple of strings, got str"):
        PolicyRule(effect="allow", roles="app-team", permissions=("a:b",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"roles: must list at least one entry"):
        PolicyRule(effect="allow", roles=(), permissions=("a:b",))
    with pytest.raises(ValueError, match=r"roles\[1\]: duplicate entry 'a' \(also roles\[0\]\)"):
        PolicyRule(effect="allow", roles=("a", "a"), permissions=("a:b",))
    with pytest.raises(ValueError, match=r"roles\[0\]: role name is longer than 128 characters"):
        PolicyRule(effect="allow", roles=("r" * 129,), permissions=("a:b",))
    with pytest.raises(ValueError, match=r"roles\[0\]: 'a b' is not a valid role name"):
        PolicyRule(effect="allow", roles=("a b",), permissions=("a:b",))
    with pytest.raises(ValueError, match=r"permissions\[0\]: must be a string, got int"):
        PolicyRule(effect="allow", roles=("a",), permissions=(3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"id: 'r 1' is not a valid rule id"):
        PolicyRule(effect="allow", roles=("a",), permissions=("a:b",), id="r 1")
    with pytest.raises(ValueError, match="description: must not be empty"):
        PolicyRule(effect="allow", roles=("a",), permissions=("a:b",), description=" ")
    with pytest.raises(ValueError, match="more than 256 entries"):
        PolicyRule(effect="allow", roles=tuple(f"r{i}" for i in range(257)), permissions=("a:b",))


def test_rule_to_dict_omits_absent_fields() -> None:
    assert allow("a:b").to_dict() == {
        "effect": "allow",
        "roles": ["app-team"],
        "permissions": ["a:b"],
    }
    rule = PolicyRule(effect="deny", roles=["x"], permissions=["*"], id="r9", description="d")
    assert rule.roles == ("x",)
    assert rule.to_dict() == {
        "id": "r9",
        "effect": "deny",
        "roles": ["x"],
        "permissions": ["*"],
        "description": "d",
    }


def test_policy_validates_its_rules() -> None:
    with pytest.raises(
        ValueError, match=r"rules\[1\].id: duplicate id 'r1' \(first used by rules\[0\]\)"
    ):
        Policy([allow("a:b", id="r1"), deny("a:b", id="r1")])
    with pytest.raises(TypeError, match=r"rules\[0\] must be a PolicyRule, got dict"):
        Policy([{"effect": "allow"}])  # type: ignore[list-item]


def test_decisions_carry_reason_and_rule() -> None:
    policy = Policy(
        [
            allow("environments:read", roles=("app-team",), id="r3"),
            deny("migrations:*", roles=("contractor",), id="r4"),
            deny("handoff:production", roles=("*",), id="r5"),
            allow("handoff:*", roles=("*",)),
        ]
    )
    app_team = Actor("alice", ("app-team",))
    assert policy.decide(app_team, "environments", "read") == Decision(
        True, "allowed by rule r3 (role app-team may environments:read)", "r3"
    )
    assert policy.decide(["contractor"], "migrations", "apply") == Decision(
        False, "denied by rule r4 (role contractor may not migrations:*)", "r4"
    )
    assert policy.decide(app_team, "handoff", "production") == Decision(
        False, "denied by rule r5 (no role may handoff:production)", "r5"
    )
    assert policy.decide(app_team, "handoff", "staging") == Decision(
        True, "allowed by rule rules[3] (any role may handoff:*)", "rules[3]"
    )
    assert policy.decide(("app-team", "read-only"), "environments", "delete") == Decision(
        False,
        "no rule allows environments:delete for roles app-team, read-only (default deny)",
        None,
    )
    assert policy.decide("guest", "x", "y").reason == (
        "no rule allows x:y for role guest (default deny)"
    )


def test_deny_overrides_an_earlier_allow() -> None:
    policy = Policy([allow("*", id="everything"), deny("secrets:*", id="no-secrets")])
    decision = policy.decide("app-team", "secrets", "read")
    assert (decision.allowed, decision.rule) == (False, "no-secrets")
    assert policy.decide("app-team", "environments", "read").allowed


def test_deny_for_one_role_beats_allow_for_another_role_of_the_same_actor() -> None:
    policy = Policy(
        [allow("a:b", roles=("admin",), id="a1"), deny("a:b", roles=("suspended",), id="d1")]
    )
    assert policy.decide(Actor("bob", ("admin",)), "a", "b").allowed
    decision = policy.decide(Actor("bob", ("admin", "suspended")), "a", "b")
    assert (decision.allowed, decision.rule) == (False, "d1")


def test_wildcard_role_needs_at_least_one_role() -> None:
    policy = Policy([allow("*", roles=("*",), id="any")])
    assert policy.decide(Actor("svc", ("whatever",), kind="service"), "a", "b").allowed
    no_roles = policy.decide(Actor("svc", (), kind="service"), "a", "b")
    assert no_roles == Decision(
        False, "no rule allows a:b for an actor with no roles (default deny)", None
    )
    assert not policy.decide([], "a", "b").allowed


def test_empty_policy_denies_everything() -> None:
    assert not Policy([]).decide("admin", "a", "b").allowed


def test_require_raises_permission_denied_without_rule_details() -> None:
    policy = Policy([allow("a:b", id="secret-rule-name")])
    assert policy.require("app-team", "a", "b").allowed
    with pytest.raises(PermissionDeniedError) as info:
        policy.require("app-team", "a", "c")
    assert info.value.code == "AUTH_ROLE_DENIED"
    assert info.value.status == 403
    assert "a:c" in info.value.message
    assert "secret-rule-name" not in info.value.message


def test_role_view_cache_is_bounded_and_stays_correct() -> None:
    policy = Policy([allow("a:b", roles=("r7",), id="x")])
    for i in range(_policy._VIEW_CACHE_LIMIT + 50):
        assert policy.decide(("r7", f"other{i}"), "a", "b").allowed
        assert not policy.decide((f"other{i}",), "a", "b").allowed
    assert len(policy._compiled._views) <= _policy._VIEW_CACHE_LIMIT


def test_policy_equality_ignores_the_compiled_index() -> None:
    first = Policy([allow("a:b")])
    first.decide("app-team", "a", "b")  # populate the cache of one of them
    assert first == Policy([allow("a:b")])
    assert hash(first) == hash(Policy([allow("a:b")]))


# --------------------------------------------------------------------------- properties

ROLES = ["a", "b", "c"]
ACTIONS = ["env", "envx", "mig"]
RESOURCES = ["read", "r", "env-prod", "env-dev", "env", "x"]
SEGMENT_PATTERNS = {
    "action": ["*", "env", "envx", "mig", "env*", "e*", "m*"],
    "resource": ["*", "read", "r*", "env-*", "env*", "env-prod", "x"],
}


@st.composite
def patterns(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return "*"
    action = draw(st.sampled_from(SEGMENT_PATTERNS["action"]))
    resource = draw(st.sampled_from(SEGMENT_PATTERNS["resource"]))
    return f"{action}:{resource}"


@st.composite
def rules(draw: st.DrawFn) -> PolicyRule:
    roles = draw(st.lists(st.sampled_from([*ROLES, "*"]), min_size=1, max_size=3, unique=True))
    perms = draw(st.lists(patterns(), min_size=1, max_size=3, unique=True))
    return PolicyRule(
        effect=draw(st.sampled_from(["allow", "deny"])),
        roles=tuple(roles),
        permissions=tuple(perms),
    )


policies = st.lists(rules(), max_size=8).map(
    lambda rs: Policy([attrs_evolve_id(r, f"r{i}") if i % 2 else r for i, r in enumerate(rs)])
)
requests = st.tuples(
    st.lists(st.sampled_from(ROLES), max_size=3).map(tuple),
    st.sampled_from(ACTIONS),
    st.sampled_from(RESOURCES),
)


def attrs_evolve_id(rule: PolicyRule, rule_id: str) -> PolicyRule:
    import attrs

    return attrs.evolve(rule, id=rule_id)


def reference_matches(rule: PolicyRule, roles: tuple[str, ...], action: str, resource: str) -> bool:
    """A naive evaluator: glob matching from the standard library, no index, no cache."""
    if not roles or not (set(rule.roles) & set(roles) or "*" in rule.roles):
        return False
    for pattern in rule.permissions:
        full = "*:*" if pattern == "*" else pattern
        p_action, p_resource = full.split(":")
        if fnmatch.fnmatchcase(action, p_action) and fnmatch.fnmatchcase(resource, p_resource):
            return True
    return False


def label(policy: Policy, index: int) -> str:
    rule = policy.rules[index]
    return rule.id if rule.id is not None else f"rules[{index}]"


@given(policies, requests)
def test_decisions_agree_with_a_naive_reference_evaluator(
    policy: Policy, request: tuple[tuple[str, ...], str, str]
) -> None:
    roles, action, resource = request
    matching = [
        i for i, r in enumerate(policy.rules) if reference_matches(r, roles, action, resource)
    ]
    denies = [i for i in matching if policy.rules[i].effect == "deny"]
    allows = [i for i in matching if policy.rules[i].effect == "allow"]
    decision = policy.decide(roles, action, resource)
    if denies:
        expected: tuple[bool, str | None] = (False, label(policy, denies[0]))
    elif allows:
        expected = (True, label(policy, allows[0]))
    else:
        expected = (False, None)
    assert (decision.allowed, decision.rule) == expected
    # The same question asked again (now from the cache) gets the same answer.
    assert policy.decide(Actor("someone", roles), action, resource) == decision


@given(policies, requests)
def test_deny_overrides(policy: Policy, request: tuple[tuple[str, ...], str, str]) -> None:
    roles, action, resource = request
    if any(
        r.effect == "deny" and reference_matches(r, roles, action, resource) for r in policy.rules
    ):
        decision = policy.decide(roles, action, resource)
        assert not decision.allowed
        assert decision.reason.startswith(f"denied by rule {decision.rule} (")


@given(policies, requests)
def test_default_deny(policy: Policy, request: tuple[tuple[str, ...], str, str]) -> None:
    roles, action, resource = request
    if not any(
        r.effect == "allow" and reference_matches(r, roles, action, resource) for r in policy.rules
    ):
        assert not policy.decide(roles, action, resource).allowed


@given(policies, requests)
def test_allowed_only_when_an_allow_matches_and_no_deny_does(
    policy: Policy, request: tuple[tuple[str, ...], str, str]
) -> None:
    roles, action, resource = request
    decision = policy.decide(roles, action, resource)
    if decision.allowed:
        rule = next(r for i, r in enumerate(policy.rules) if label(policy, i) == decision.rule)
        assert rule.effect == "allow"
        assert reference_matches(rule, roles, action, resource)
        assert decision.reason.startswith(f"allowed by rule {decision.rule} (")
        assert not any(
            r.effect == "deny" and reference_matches(r, roles, action, resource)
            for r in policy.rules
        )
    elif decision.rule is None:
        assert decision.reason.endswith("(default deny)")


# --------------------------------------------------------------------------- bundles


def test_example_bundle_loads_and_decides() -> None:
    bundle = load_policy_bundle(EXAMPLE_YAML)
    assert (bundle.name, bundle.version, bundle.author) == (
        "platform-rbac",
        "2024.05.1",
        "platform-team@example.com",
    )
    assert bundle.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert bundle.description == "Access to the platform APIs"
    assert bundle.rules is bundle.policy.rules
    assert len(bundle.rules) == 4
    policy = bundle.policy
    assert policy.decide("app-team", "handoff", "env-staging").rule == "r2"
    assert policy.decide("platform-engineer", "handoff", "env-production").rule == "r3"
    assert policy.decide("app-team", "migrations", "apply").rule == "rules[3]"
    assert not policy.decide("read-only", "migrations", "apply").allowed


def test_to_dict_round_trips_through_json_and_yaml() -> None:
    import yaml

    bundle = load_policy_bundle(EXAMPLE_YAML)
    data = bundle.to_dict()
    assert data["created_at"] == "2024-05-01T12:00:00Z"
    assert data["content_hash"] == bundle.content_hash
    assert list(data) == [
        "name",
        "version",
        "author",
        "created_at",
        "description",
        "content_hash",
        "rules",
    ]
    assert load_policy_bundle(json.dumps(data)) == bundle
    assert load_policy_bundle(yaml.safe_dump(data), format="yaml") == bundle
    assert PolicyBundle.from_dict(data) == bundle


def test_content_hash_is_canonical() -> None:
    bundle = load_policy_bundle(EXAMPLE_YAML)
    data = bundle.to_dict()
    del data["content_hash"]
    reordered = {k: data[k] for k in reversed(list(data))}
    reordered["rules"] = [{k: r[k] for k in sorted(r, reverse=True)} for r in data["rules"]]
    as_json = json.dumps(reordered, indent=7)
    assert load_policy_bundle(as_json).content_hash == bundle.content_hash
    # Metadata is not content: only the rules are hashed.
    other = PolicyBundle.from_dict({**data, "name": "other", "version": 99, "author": "me"})
    assert other.content_hash == bundle.content_hash
    # The documented recipe reproduces it.
    import hashlib

    canonical = json.dumps(data["rules"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert bundle.content_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_content_hash_changes_with_the_rules() -> None:
    data = bundle_dict()
    base = PolicyBundle.from_dict(data).content_hash
    changed = bundle_dict(rules=[{**data["rules"][0], "permissions": ["a:c"]}])
    assert PolicyBundle.from_dict(changed).content_hash != base
    described = bundle_dict(rules=[{**data["rules"][0], "description": "x"}])
    assert PolicyBundle.from_dict(described).content_hash != base
    # null and absent optional fields are the same content
    nulled = bundle_dict(rules=[{**data["rules"][0], "description": None}])
    assert PolicyBundle.from_dict(nulled).content_hash == base


def test_content_hash_in_the_file_is_verified() -> None:
    bundle = PolicyBundle.from_dict(bundle_dict())
    assert PolicyBundle.from_dict(bundle_dict(content_hash=bundle.content_hash)) == bundle
    problems = PolicyError_problems(bundle_dict(content_hash="0" * 64))
    assert problems == (
        "content_hash: does not match the rules (they were changed after hashing, or the hash "
        "was copied from another bundle); recompute it or remove the key",
    )
    assert PolicyError_problems(bundle_dict(content_hash="ABC")) == (
        "content_hash: must be 64 lowercase hex characters (a SHA-256)",
    )


def PolicyError_problems(data: object) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as info:
        PolicyBundle.from_dict(data, source="<test>")
    assert info.value.source == "<test>"
    return info.value.problems


bundle_rules = st.lists(rules(), max_size=5)


@given(
    bundle_rules,
    st.one_of(
        st.integers(0, 10**6), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,10}", fullmatch=True)
    ),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
    st.permutations(["name", "version", "author", "created_at", "rules"]),
    st.integers(0, 4),
)
def test_random_bundles_round_trip_with_any_key_order_and_indent(
    rule_list: list[PolicyRule],
    version: int | str,
    created_at: datetime,
    order: list[str],
    indent: int,
) -> None:
    bundle = PolicyBundle(
        policy=Policy(rule_list),
        name="random",
        version=version,  # type: ignore[arg-type]
        author="prop test",
        created_at=created_at,
    )
    assert bundle.version == str(version)
    data = bundle.to_dict()
    shuffled = {key: data[key] for key in order}
    shuffled["rules"] = [dict(reversed(r.items())) for r in data["rules"]]
    loaded = load_policy_bundle(json.dumps(shuffled, indent=indent or None))
    assert loaded == bundle
    assert loaded.content_hash == bundle.content_hash
    assert loaded.created_at == created_at


def test_bundle_constructor_validates_and_normalises() -> None:
    policy = Policy([allow("a:b")])
    bundle = PolicyBundle(
        policy=policy, name="n", version=3, author="a", created_at="2024-05-01T14:00:00+02:00"
    )
    assert bundle.version == "3"
    assert bundle.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    with pytest.raises(ValueError, match="created_at: needs a timezone offset"):
        PolicyBundle(policy=policy, name="n", version=3, author="a", created_at="2024-05-01T14:00")
    with pytest.raises(ValueError, match="version: must not be negative"):
        PolicyBundle(policy=policy, name="n", version=-1, author="a", created_at=datetime.now(UTC))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name: 'a b' is not a valid bundle name"):
        PolicyBundle(
            policy=policy, name="a b", version="1", author="a", created_at=datetime.now(UTC)
        )
    with pytest.raises(ValueError, match="author: must not contain control characters"):
        PolicyBundle(
            policy=policy, name="n", version="1", author="a\nb", created_at=datetime.now(UTC)
        )
    with pytest.raises(TypeError, match="policy must be a Policy, got list"):
        PolicyBundle(policy=[], name="n", version="1", author="a", created_at=datetime.now(UTC))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- malformed documents

MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("missing name", {"name": None}, "(top level): missing required key 'name'"),
    ("name type", {"name": 5}, "name: must be a string, got int"),
    (
        "version float",
        {"version": 1.5},
        "version: must be a string or an integer, got float (quote it)",
    ),
    ("version bool", {"version": True}, "version: must be a string or an integer, got bool"),
    ("version bad", {"version": "v 1"}, "version: 'v 1' is not a valid version"),
    ("author empty", {"author": "  "}, "author: must not be empty"),
    ("author long", {"author": "x" * 257}, "author: is longer than 256 characters"),
    (
        "created_at naive",
        {"created_at": "2024-05-01T12:00:00"},
        "created_at: needs a timezone offset",
    ),
    (
        "created_at junk",
        {"created_at": "yesterday"},
        "created_at: 'yesterday' is not an ISO-8601 timestamp",
    ),
    (
        "created_at type",
        {"created_at": 1714564800},
        "created_at: must be an ISO-8601 string, got int",
    ),
    ("description type", {"description": ["x"]}, "description: must be a string, got list"),
    (
        "unknown key",
        {"owner": "x"},
        "(top level): unknown key 'owner' (expected author, content_hash, created_at, "
        "description, name, rules, version)",
    ),
    (
        "near-miss key",
        {"author": None, "autor": "x"},
        "(top level): unknown key 'autor' (expected author, content_hash, created_at, "
        "description, name, rules, version); did you mean 'author'?",
    ),
    ("rules type", {"rules": {"r1": {}}}, "rules: must be a list of rules, got dict"),
    ("rule type", {"rules": ["allow all"]}, "rules[0]: a rule must be a mapping, got str"),
    ("rule missing", {"rules": [{"effect": "allow"}]}, "rules[0]: missing required key 'roles'"),
    (
        "unknown effect",
        {"rules": [{"effect": "permit", "roles": ["a"], "permissions": ["a:b"]}]},
        "rules[0].effect: must be 'allow' or 'deny', got 'permit'",
    ),
    (
        "roles type",
        {"rules": [{"effect": "allow", "roles": "a", "permissions": ["a:b"]}]},
        "rules[0].roles: must be a list of strings, got str",
    ),
    (
        "roles empty",
        {"rules": [{"effect": "allow", "roles": [], "permissions": ["a:b"]}]},
        "rules[0].roles: must list at least one entry",
    ),
    (
        "role type",
        {"rules": [{"effect": "allow", "roles": [None], "permissions": ["a:b"]}]},
        "rules[0].roles[0]: must be a string, got null",
    ),
    (
        "bad permission",
        {"rules": [{"effect": "allow", "roles": ["a"], "permissions": ["a:b", "environments"]}]},
        "rules[0].permissions[1]: 'environments' is not action:resource",
    ),
    (
        "dup permission",
        {"rules": [{"effect": "allow", "roles": ["a"], "permissions": ["a:b", "a:b"]}]},
        "rules[0].permissions[1]: duplicate entry 'a:b' (also permissions[0])",
    ),
    (
        "rule unknown key",
        {"rules": [{"effect": "allow", "roles": ["a"], "permissions": ["a:b"], "role": "x"}]},
        "rules[0]: unknown key 'role' (expected description, effect, id, permissions, roles); "
        "did you mean 'roles'?",
    ),
    (
        "rule id type",
        {"rules": [{"id": 7, "effect": "allow", "roles": ["a"], "permissions": ["a:b"]}]},
        "rules[0].id: must be a string, got int",
    ),
    (
        "rule description",
        {"rules": [{"effect": "allow", "roles": ["a"], "permissions": ["a:b"], "description": ""}]},
        "rules[0].description: must not be empty",
    ),
    (
        "dup ids",
        {
            "rules": [
                {"id": "x", "effect": "allow", "roles": ["a"], "permissions": ["a:b"]},
                {"id": "x", "effect": "deny", "roles": ["a"], "permissions": ["a:b"]},
            ]
        },
        "rules[1].id: duplicate id 'x' (first used by rules[0])",
    ),
]


@pytest.mark.parametrize(
    ("change", "expected"), [(c, e) for _, c, e in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_bundles_name_the_location(change: dict[str, Any], expected: str) -> None:
    data = {k: v for k, v in bundle_dict(**change).items() if v is not None}
    problems = problems_of(json.dumps(data))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    text = """\
name: "bad name"
version: 1.5
author: ""
created_at: 2024-05-01
extra: 1
rules:
  - id: r1
    efect: allow
    roles: [a, a, 3]
    permissions: ["environments", "*:*:x", "a:*b", "ok:ok"]
  - id: r1
    effect: maybe
    roles: x
    permissions: []
  - 5
"""
    with pytest.raises(PolicyError) as info:
        load_policy_bundle(text)
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.code, err.status) == ("POLICY_INVALID", 500)
    assert err.problems == (
        "(top level): unknown key 'extra' (expected author, content_hash, created_at, "
        "description, name, rules, version)",
        "name: 'bad name' is not a valid bundle name (letters, digits, '.', '_' and '-', "
        "starting with a letter or digit)",
        "version: must be a string or an integer, got float (quote it)",
        "author: must not be empty",
        "created_at: needs a time and a timezone offset, e.g. '2024-05-01T12:00:00Z'",
        "rules[0]: unknown key 'efect' (expected description, effect, id, permissions, roles); "
        "did you mean 'effect'?",
        "rules[0]: missing required key 'effect'",
        "rules[0].roles[1]: duplicate entry 'a' (also roles[0])",
        "rules[0].roles[2]: must be a string, got int",
        "rules[0].permissions[0]: 'environments' is not action:resource (expected exactly one "
        "':', e.g. 'environments:read')",
        "rules[0].permissions[1]: '*:*:x' is not action:resource (expected exactly one ':', "
        "e.g. 'environments:read')",
        "rules[0].permissions[2]: 'a:*b': resource '*b' is not a name or wildcard (letters, "
        "digits, '.', '_' and '-', starting with a letter or digit; '*' only alone or at the end)",
        "rules[1].effect: must be 'allow' or 'deny', got 'maybe'",
        "rules[1].roles: must be a list of strings, got str",
        "rules[1].permissions: must list at least one entry",
        "rules[2]: a rule must be a mapping, got int",
        "rules[1].id: duplicate id 'r1' (first used by rules[0])",
    )
    assert str(err).startswith("policy bundle <text> is invalid: 17 problem(s):\n  - (top level)")
    assert "rules[2]: a rule must be a mapping, got int" in str(err)


def test_duplicate_keys_are_reported_in_json_and_yaml() -> None:
    json_text = (
        '{"name": "a", "name": "b", "version": 1, "author": "x", "created_at": '
        '"2024-05-01T12:00:00Z", "rules": [{"effect": "allow", "effect": "deny", '
        '"roles": ["a"], "permissions": ["a:b"]}]}'
    )
    assert problems_of(json_text) == (
        "(top level): duplicate key 'name'",
        "rules[0]: duplicate key 'effect'",
    )
    yaml_text = (
        "name: a\nname: b\nversion: 1\nauthor: x\ncreated_at: 2024-05-01T12:00:00Z\nrules: []\n"
    )
    assert problems_of(yaml_text) == ("(top level): duplicate key 'name'",)


def test_yaml_anchors_and_merge_keys_are_not_duplicates() -> None:
    text = """\
name: merged
version: 1
author: x
created_at: 2024-05-01T12:00:00+00:00
rules:
  - &base
    id: r1
    effect: allow
    roles: &team [app-team]
    permissions: ["a:b"]
  - <<: *base
    id: r2
    effect: deny
    roles: *team
"""
    bundle = load_policy_bundle(text)
    assert [r.id for r in bundle.rules] == ["r1", "r2"]
    assert bundle.rules[1].effect == "deny"
    assert bundle.rules[1].roles == ("app-team",)


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        (
            '{"name": "a",',
            None,
            "<text>: invalid JSON at line 1 column 14: Expecting property name",
        ),
        ("{'name': 1}", "json", "<text>: invalid JSON at line 1 column 2: Expecting property name"),
        (
            "name: [a\nversion: 2",
            None,
            "<text>: invalid YAML at line 2 column 8: did not find expected ',' or ']'",
        ),
        ("a: *nope", "yaml", "<text>: invalid YAML at line 1 column 4: found undefined alias"),
        ("[1, 2]", "yaml", "(top level): a policy bundle must be a mapping, got list"),
        ("", None, "(top level): a policy bundle must be a mapping, got null"),
        (
            "policy.txt",
            None,
            "(top level): a policy bundle must be a mapping, got str (to load a file, pass a "
            "pathlib.Path or a name ending .json/.yaml)",
        ),
        ("[" * 100_000, "json", "<text>: invalid JSON: nested too deeply"),
        ("a: " + "[" * 5000, "yaml", "<text>: invalid YAML at line 1 column"),
    ],
)
def test_unparseable_documents(text: str, fmt: Any, expected: str) -> None:
    problems = problems_of(text, format=fmt)
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_yaml_timestamps_must_be_aware_datetimes() -> None:
    base = "name: a\nversion: 1\nauthor: x\nrules: []\n"
    assert problems_of(base + "created_at: 2024-05-01 12:00:00\n") == (
        "created_at: needs a timezone offset, e.g. '2024-05-01T12:00:00Z'",
    )
    loaded = load_policy_bundle(base + "created_at: 2024-05-01T12:00:00-02:00\n")
    assert loaded.created_at == datetime(2024, 5, 1, 14, tzinfo=UTC)
    assert loaded.policy.rules == ()


def test_size_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"effect": "allow", "roles": ["a"], "permissions": ["a:b"]}
    monkeypatch.setattr(_policy, "MAX_RULES", 3)
    assert problems_of(json.dumps(bundle_dict(rules=[rule] * 4))) == ("rules: more than 3 rules",)
    monkeypatch.setattr(_policy, "MAX_DOCUMENT_BYTES", 1024 * 1024)
    problems = problems_of(b"{" + b" " * (1024 * 1024) + b"}")
    assert problems == ("<text>: larger than 1 MiB",)


# --------------------------------------------------------------------------- sources and formats


def test_files_by_suffix(tmp_path: Path) -> None:
    data = bundle_dict()
    expected = PolicyBundle.from_dict(data)
    for name, text in [
        ("p.json", json.dumps(data)),
        ("p.yaml", EXAMPLE_YAML),
        ("p.YML", EXAMPLE_YAML),
    ]:
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert load_policy_bundle(tmp_path / "p.json") == expected
    assert load_policy_bundle(str(tmp_path / "p.json")) == expected
    assert load_policy_bundle(tmp_path / "p.yaml") == load_policy_bundle(EXAMPLE_YAML)
    assert load_policy_bundle(str(tmp_path / "p.YML")).name == "platform-rbac"


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy_bundle(missing)
    assert info.value.source == str(missing)
    assert info.value.problems == (f"{missing}: cannot read the file: No such file or directory",)

    odd = tmp_path / "policy.conf"
    odd.write_text(json.dumps(bundle_dict()))
    assert problems_of(odd) == (
        f"{odd}: cannot tell the format from the suffix '.conf'; name it .json, .yaml or .yml, "
        "or pass format='json' or 'yaml'",
    )
    assert load_policy_bundle(odd, format="json").name == "rbac"

    latin = tmp_path / "latin.json"
    latin.write_bytes(
        json.dumps(bundle_dict(author="caf\u00e9")).encode("latin-1").replace(b"\\u00e9", b"\xe9")
    )
    assert problems_of(latin) == (f"{latin}: not UTF-8 (invalid byte at offset 45)",)

    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "name": "a",\n  oops\n}')
    assert problems_of(broken) == (
        f"{broken}: invalid JSON at line 3 column 3: "
        "Expecting property name enclosed in double quotes",
    )


def test_bytes_bom_and_format_detection() -> None:
    data = bundle_dict()
    assert load_policy_bundle(b"\xef\xbb\xbf" + json.dumps(data).encode()).name == "rbac"
    assert load_policy_bundle("  \n" + json.dumps(data)).name == "rbac"
    # JSON text read as YAML works too (YAML is a superset here)
    assert load_policy_bundle(json.dumps(data), format="yaml").name == "rbac"


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="format must be 'json', 'yaml' or None, got 'toml'"):
        load_policy_bundle("{}", format="toml")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a path, str or bytes, got int"):
        load_policy_bundle(42)  # type: ignore[arg-type]


def test_yaml_without_pyyaml_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _policy._yaml_loader.cache_clear()
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` fail
    try:
        with pytest.raises(PolicyError) as info:
            load_policy_bundle(EXAMPLE_YAML)
        assert info.value.code == "POLICY_YAML_UNAVAILABLE"
        assert "pip install 'aiaas-core[yaml]'" in str(info.value)
        # JSON needs nothing extra
        assert load_policy_bundle(json.dumps(bundle_dict())).name == "rbac"
    finally:
        _policy._yaml_loader.cache_clear()


def test_policy_error_messages() -> None:
    err = PolicyError("custom")
    assert (err.message, err.problems, err.source) == ("custom", (), "<policy>")
    assert PolicyError().message == "policy bundle <policy> is invalid"
    err = PolicyError(problems=["a: b", "c: d"], source="x.yaml")
    assert err.message == "policy bundle x.yaml is invalid: 2 problem(s):\n  - a: b\n  - c: d"
