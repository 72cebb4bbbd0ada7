"""Role-based access policies: rules, fast decisions with a reason, and audited policy bundles.

Permissions
-----------
A permission is two segments joined by one colon, ``action:resource``: ``environments:read``,
``migrations:apply``, ``handoff:production``. The first segment is called the *action* and the
second the *resource* throughout the API (``Policy.decide(who, action, resource)``).

A *segment* is 1 to 128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, starting
with a letter or a digit. Matching is exact and case-sensitive.

Rules grant or deny permission *patterns*. The wildcard grammar is deliberately small::

    pattern         := "*" | segment-pattern ":" segment-pattern
    segment-pattern := "*" | segment | segment "*"

- ``*`` alone matches every permission (it is the same as ``*:*``);
- a segment-pattern ``*`` matches any segment: ``environments:*``, ``*:read``;
- ``prefix*`` matches every segment that starts with ``prefix`` (the prefix itself included):
  ``handoff:env-*`` matches ``handoff:env-staging`` and ``handoff:env-``, never ``handoff:env``.

Nothing else is a wildcard: ``*`` anywhere but at the end of a segment (``*-prod``, ``e*v``,
``**``), empty segments, spaces, a second colon or any other character make the pattern invalid.
So a pattern segment matches a requested segment exactly when they are equal (literal) or the
requested one starts with the prefix (wildcard) -- a property the tests check against a naive
reference evaluator.

Decisions
---------
A :class:`Policy` is an ordered tuple of :class:`PolicyRule`. ``policy.decide(who, action,
resource)`` returns a :class:`Decision`:

1. if any ``deny`` rule matches (one of its roles is one of the actor's roles, or ``*``, and one
   of its patterns matches), the request is denied -- deny overrides allow;
2. otherwise, if any ``allow`` rule matches, it is allowed;
3. otherwise it is denied by default.

The rule reported is the first matching one in policy order (a deny before any allow). Rule
``*`` in ``roles`` matches every actor that has at least one role; an actor with no roles is
always denied. Each decision carries a human-readable ``reason`` (``"allowed by rule r3 (role
app-team may environments:read)"``) and the matched rule's id (rules without an ``id`` are named
by position, ``rules[2]``), or ``None`` for a default deny.

Rules are compiled once, indexed by role and action, and the merged view for each set of roles
is cached, so a decision is a dictionary lookup and a short loop.

Policy bundle files
-------------------
A :class:`PolicyBundle` is a policy plus audit metadata, loaded from JSON or YAML (YAML needs the
optional extra: ``pip install 'aiaas-core[yaml]'``) with :func:`load_policy_bundle`::

    name: platform-rbac               # required; a segment (letters, digits, . _ -)
    version: "2024.05.1"              # required; a string or a non-negative integer
    author: platform-team@example.com # required; free text
    created_at: "2024-05-01T12:00:00Z"  # required; ISO-8601 with a timezone offset
    description: Access to the platform APIs   # optional
    # content_hash: <64 hex digits>   # optional; when present it must match the rules
    rules:                            # required; an ordered list, may be empty (deny all)
      - id: r1                        # optional; unique; a segment
        effect: allow                 # required; allow | deny
        roles: [platform-engineer]    # required; non-empty list of role names or "*"
        permissions: ["*"]            # required; non-empty list of patterns
        description: Platform engineers may do everything   # optional
      - id: r2
        effect: allow
        roles: [app-team, read-only]
        permissions: ["environments:read", "handoff:env-*"]
      - id: r3
        effect: deny
        roles: ["*"]
        permissions: ["handoff:env-production"]

Unknown keys, duplicate keys, wrong types, duplicate rule ids, duplicate list entries and
invalid patterns are errors. Loading reports *every* problem at once in one :class:`PolicyError`,
each with its location: ``rules[2].permissions[0]: 'environments' is not action:resource``.

``content_hash`` is the SHA-256 (hex) of the canonical JSON of the rules list: each rule as a
JSON object of its present fields (absent optional fields omitted), keys sorted, no whitespace,
UTF-8. Identical rules give an identical hash whatever the key order, indentation or file
format; the order of rules and of list entries is content (it decides which rule a decision
names). :meth:`PolicyBundle.to_dict` writes the hash, so a dumped bundle loads back verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from aiaas_core._context import Actor
from aiaas_core._errors import ConfigError, PermissionDeniedError

__all__ = [
    "MAX_RULES",
    "Decision",
    "Policy",
    "PolicyBundle",
    "PolicyError",
    "PolicyRule",
    "load_policy_bundle",
]

Effect = Literal["allow", "deny"]
PolicyFormat = Literal["json", "yaml"]

#: Most rules a bundle may hold, and most roles or patterns in one rule (bounds loading work).
MAX_RULES: Final = 10_000
MAX_LIST_ITEMS: Final = 256
MAX_DOCUMENT_BYTES: Final = 4 * 1024 * 1024
_MAX_SEGMENT: Final = 128
_MAX_TEXT: Final = 1024

_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SEGMENT_PATTERN_RE: Final = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9._-]{0,127}\*?")
_VERSION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
_GRAMMAR_HINT: Final = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit; "
    "'*' only alone or at the end"
)

_BUNDLE_KEYS: Final = (
    "author",
    "content_hash",
    "created_at",
    "description",
    "name",
    "rules",
    "version",
)
_BUNDLE_REQUIRED: Final = ("name", "version", "author", "created_at", "rules")
_RULE_KEYS: Final = ("description", "effect", "id", "permissions", "roles")
_RULE_REQUIRED: Final = ("effect", "roles", "permissions")


class PolicyError(ConfigError):
    """A policy bundle could not be loaded; ``problems`` lists every problem with its location."""

    code = "POLICY_INVALID"
    title = "Invalid policy"

    def __init__(
        self,
        message: str | None = None,
        *,
        problems: tuple[str, ...] | list[str] = (),
        source: str = "<policy>",
        code: str | None = None,
    ) -> None:
        self.source = source
        problems = tuple(problems)
        if message is None:
            message = f"policy bundle {source} is invalid"
            if problems:
                message += f": {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        super().__init__(message, problems=problems, code=code)


# --------------------------------------------------------------------------- validation helpers


def _show(value: object) -> str:
    """A short, escaped rendering of a user-supplied value for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return "dict" if isinstance(value, dict) else type(value).__name__


def _segment_problem(value: object, what: str) -> str | None:
    """Why ``value`` is not a valid literal segment (a role, an id, a name), or None."""
    if not isinstance(value, str):
        return f"must be a string, got {_type_name(value)}"
    if not _SEGMENT_RE.fullmatch(value):
        if len(value) > _MAX_SEGMENT:
            return f"{what} is longer than {_MAX_SEGMENT} characters"
        return (
            f"{_show(value)} is not a valid {what} (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit)"
        )
    return None


def _role_problem(value: object) -> str | None:
    if value == "*":
        return None
    return _segment_problem(value, "role name")


def _permission_problem(value: object) -> str | None:
    """Why ``value`` is not a valid permission pattern, or None."""
    if not isinstance(value, str):
        return f"must be a string, got {_type_name(value)}"
    if value == "*":
        return None
    if value.count(":") != 1:
        return (
            f"{_show(value)} is not action:resource "
            "(expected exactly one ':', e.g. 'environments:read')"
        )
    action, _, resource = value.partition(":")
    for part, seg in (("action", action), ("resource", resource)):
        if not seg:
            return f"{_show(value)} has an empty {part}"
        if len(seg.rstrip("*")) > _MAX_SEGMENT:
            return f"{_show(value)}: the {part} is longer than {_MAX_SEGMENT} characters"
        if not _SEGMENT_PATTERN_RE.fullmatch(seg):
            return (
                f"{_show(value)}: {part} {_show(seg)} is not a name or wildcard ({_GRAMMAR_HINT})"
            )
    return None


def _text_problem(value: object, *, limit: int = _MAX_TEXT) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {_type_name(value)}"
    if not value.strip():
        return "must not be empty"
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if _CONTROL_RE.search(value):
        return "must not contain control characters"
    return None


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"expected a list or tuple of strings, got {_type_name(value)}")
    return tuple(value)


def _list_problems(
    values: tuple[object, ...], what: str, check: Callable[[object], str | None], *, loc: str = ""
) -> list[str]:
    """Problems of a list of names: empty, too long, bad entries, duplicates (with locations)."""
    where = f"{loc}." if loc else ""
    if not values:
        return [f"{where}{what}: must list at least one entry"]
    if len(values) > MAX_LIST_ITEMS:
        return [f"{where}{what}: more than {MAX_LIST_ITEMS} entries"]
    problems: list[str] = []
    seen: dict[object, int] = {}
    for i, item in enumerate(values):
        problem = check(item)
        if problem is not None:
            problems.append(f"{where}{what}[{i}]: {problem}")
            continue
        if item in seen:
            problems.append(
                f"{where}{what}[{i}]: duplicate entry {_show(item)} (also {what}[{seen[item]}])"
            )
        else:
            seen[item] = i
    return problems


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise ValueError("; ".join(problems))


def _check(name: str, problem: str | None) -> None:
    if problem is not None:
        raise ValueError(f"{name}: {problem}")


def _validate_effect(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    if value not in ("allow", "deny"):
        raise ValueError(f"effect: must be 'allow' or 'deny', got {_show(value)}")


def _validate_roles(_inst: object, _attr: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    _raise_problems(_list_problems(value, "roles", _role_problem))


def _validate_permissions(
    _inst: object, _attr: attrs.Attribute[tuple[str, ...]], value: Any
) -> None:
    _raise_problems(_list_problems(value, "permissions", _permission_problem))


def _validate_id(_inst: object, _attr: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        _check("id", _segment_problem(value, "rule id"))


def _validate_description(_inst: object, _attr: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        _check("description", _text_problem(value))


# --------------------------------------------------------------------------- value objects


@attrs.frozen(kw_only=True)
class PolicyRule:
    """One rule: ``effect`` (``allow``/``deny``) of ``permissions`` patterns for ``roles``.

    ``roles`` may hold ``"*"`` (any actor with at least one role). ``id`` names the rule in
    decisions and audit events; unnamed rules are named by position (``rules[2]``).
    """

    effect: Effect = attrs.field(validator=_validate_effect)
    roles: tuple[str, ...] = attrs.field(converter=_str_tuple, validator=_validate_roles)
    permissions: tuple[str, ...] = attrs.field(
        converter=_str_tuple, validator=_validate_permissions
    )
    id: str | None = attrs.field(default=None, validator=_validate_id)
    description: str | None = attrs.field(default=None, validator=_validate_description)

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain JSON data; absent optional fields are omitted."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["effect"] = self.effect
        out["roles"] = list(self.roles)
        out["permissions"] = list(self.permissions)
        if self.description is not None:
            out["description"] = self.description
        return out


@attrs.frozen
class Decision:
    """The outcome of :meth:`Policy.decide`: allowed or not, why, and which rule decided."""

    allowed: bool
    reason: str
    rule: str | None = None


# A compiled (pattern, role) pair: action value, action-is-prefix, resource value,
# resource-is-prefix, and the precomputed decision returned when it matches.
_Entry = tuple[str, bool, str, bool, Decision]


def _compile_segment(pattern: str) -> tuple[str, bool]:
    """``*`` -> ("", prefix); ``abc*`` -> ("abc", prefix); ``abc`` -> ("abc", literal)."""
    if pattern.endswith("*"):
        return pattern[:-1], True
    return pattern, False


class _RoleView:
    """Every entry that can apply to one set of roles, ordered deny-first then by rule order."""

    __slots__ = ("by_action", "generic", "who")

    def __init__(self, entries: list[tuple[tuple[int, int, int, int], _Entry]], who: str) -> None:
        entries.sort(key=lambda item: item[0])
        ordered = [entry for _, entry in entries]
        literal_actions = {e[0] for e in ordered if not e[1]}
        self.generic: tuple[_Entry, ...] = tuple(e for e in ordered if e[1])
        self.by_action: dict[str, tuple[_Entry, ...]] = {
            action: tuple(e for e in ordered if e[1] or e[0] == action)
            for action in literal_actions
        }
        self.who = who


_NO_ROLES_VIEW: Final = _RoleView([], "an actor with no roles")
_VIEW_CACHE_LIMIT: Final = 1024


class _Compiled:
    """Rules indexed by role; merged per-role-set views built on first use and cached."""

    __slots__ = ("_by_role", "_views")

    def __init__(self, rules: tuple[PolicyRule, ...]) -> None:
        by_role: dict[str, list[tuple[tuple[int, int, int, int], _Entry]]] = {}
        for index, rule in enumerate(rules):
            label = rule.id if rule.id is not None else f"rules[{index}]"
            rank = 0 if rule.effect == "deny" else 1
            for role_index, role in enumerate(rule.roles):
                who = "any role" if role == "*" else f"role {role}"
                for perm_index, pattern in enumerate(rule.permissions):
                    if pattern == "*":
                        action, resource = "*", "*"
                    else:
                        action, _, resource = pattern.partition(":")
                    if rule.effect == "allow":
                        reason = f"allowed by rule {label} ({who} may {pattern})"
                    elif role == "*":
                        reason = f"denied by rule {label} (no role may {pattern})"
                    else:
                        reason = f"denied by rule {label} ({who} may not {pattern})"
                    a_val, a_pre = _compile_segment(action)
                    r_val, r_pre = _compile_segment(resource)
                    entry: _Entry = (
                        a_val,
                        a_pre,
                        r_val,
                        r_pre,
                        Decision(rule.effect == "allow", reason, label),
                    )
                    key = (rank, index, role_index, perm_index)
                    by_role.setdefault(role, []).append((key, entry))
        self._by_role = by_role
        self._views: dict[tuple[str, ...], _RoleView] = {}

    def view(self, roles: tuple[str, ...]) -> _RoleView:
        view = self._views.get(roles)
        if view is not None:
            return view
        if not roles:
            return _NO_ROLES_VIEW
        entries: list[tuple[tuple[int, int, int, int], _Entry]] = []
        for role in {*roles, "*"}:
            entries.extend(self._by_role.get(role, ()))
        unique = list(dict.fromkeys(roles))
        who = ("role " if len(unique) == 1 else "roles ") + ", ".join(unique)
        view = _RoleView(entries, who)
        if len(self._views) >= _VIEW_CACHE_LIMIT:
            self._views.clear()  # bounded: role sets come from actors, not from rules
        self._views[roles] = view
        return view


def _to_rules(value: Iterable[PolicyRule]) -> tuple[PolicyRule, ...]:
    rules = tuple(value)
    for i, rule in enumerate(rules):
        if not isinstance(rule, PolicyRule):
            raise TypeError(f"rules[{i}] must be a PolicyRule, got {_type_name(rule)}")
    return rules


def _validate_unique_ids(
    _inst: object, _attr: attrs.Attribute[tuple[PolicyRule, ...]], rules: tuple[PolicyRule, ...]
) -> None:
    _raise_problems(_duplicate_id_problems([r.id for r in rules]))


def _duplicate_id_problems(ids: list[object]) -> list[str]:
    first: dict[object, int] = {}
    problems: list[str] = []
    for i, rule_id in enumerate(ids):
        if not isinstance(rule_id, str):
            continue  # absent, or already reported as a wrong type
        if rule_id in first:
            problems.append(
                f"rules[{i}].id: duplicate id {_show(rule_id)} "
                f"(first used by rules[{first[rule_id]}])"
            )
        else:
            first[rule_id] = i
    return problems


@attrs.frozen
class Policy:
    """An ordered set of rules, compiled for fast decisions (deny overrides, default deny)."""

    rules: tuple[PolicyRule, ...] = attrs.field(converter=_to_rules, validator=_validate_unique_ids)
    _compiled: _Compiled = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _Compiled(self.rules), takes_self=True),
    )

    def decide(self, who: Actor | str | Iterable[str], action: str, resource: str) -> Decision:
        """Decide whether ``who`` (an actor, a role, or roles) may ``action:resource``.

        ``action`` and ``resource`` are compared with the rules' patterns exactly as given.
        """
        if isinstance(who, Actor):
            roles = who.roles
        else:
            roles = (who,) if isinstance(who, str) else tuple(who)
        view = self._compiled.view(roles)
        for a_val, a_pre, r_val, r_pre, decision in view.by_action.get(action, view.generic):
            if (action.startswith(a_val) if a_pre else action == a_val) and (
                resource.startswith(r_val) if r_pre else resource == r_val
            ):
                return decision
        return Decision(
            False, f"no rule allows {action}:{resource} for {view.who} (default deny)", None
        )

    def require(self, who: Actor | str | Iterable[str], action: str, resource: str) -> Decision:
        """Like :meth:`decide`, but raise :class:`PermissionDeniedError` when denied.

        The error's message names the permission needed; the decision's reason (which names
        rules) stays server-side.
        """
        decision = self.decide(who, action, resource)
        if not decision.allowed:
            raise PermissionDeniedError(f"Permission denied: this needs {action}:{resource}")
        return decision


def _rules_hash(rules: tuple[PolicyRule, ...]) -> str:
    canonical = json.dumps(
        [rule.to_dict() for rule in rules],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _parse_created_at(value: object) -> datetime | str:
    """A timezone-aware UTC datetime, or a problem message."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return "needs a time and a timezone offset, e.g. '2024-05-01T12:00:00Z'"
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return f"{_show(value)} is not an ISO-8601 timestamp (e.g. '2024-05-01T12:00:00Z')"
    else:
        return f"must be an ISO-8601 string, got {_type_name(value)}"
    if moment.utcoffset() is None:
        return "needs a timezone offset, e.g. '2024-05-01T12:00:00Z'"
    return moment.astimezone(UTC)


def _to_created_at(value: object) -> datetime:
    parsed = _parse_created_at(value)
    if isinstance(parsed, str):
        raise ValueError(f"created_at: {parsed}")
    return parsed


def _version_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"must be a string or an integer, got {_type_name(value)} (quote it)"
    if isinstance(value, int):
        return None if value >= 0 else "must not be negative"
    if not _VERSION_RE.fullmatch(value):
        return (
            f"{_show(value)} is not a valid version (1 to 64 letters, digits, '.', '+', '_' "
            "and '-', starting with a letter or digit)"
        )
    return None


def _to_version(value: object) -> str:
    _check("version", _version_problem(value))
    return str(value)


def _validate_name(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    _check("name", _segment_problem(value, "bundle name"))


def _validate_author(_inst: object, _attr: attrs.Attribute[str], value: object) -> None:
    _check("author", _text_problem(value, limit=256))


def _to_policy(value: object) -> Policy:
    # A converter, not a validator: it must run before content_hash is computed from it.
    if not isinstance(value, Policy):
        raise TypeError(f"policy must be a Policy, got {_type_name(value)}")
    return value


@attrs.frozen(kw_only=True)
class PolicyBundle:
    """A :class:`Policy` with its audit metadata and a content hash of its rules.

    ``created_at`` accepts an aware datetime or an ISO-8601 string and is kept in UTC;
    ``version`` accepts a string or a non-negative integer and is kept as a string.
    ``content_hash`` is computed from the rules (see the module documentation).
    """

    policy: Policy = attrs.field(converter=_to_policy)
    name: str = attrs.field(validator=_validate_name)
    version: str = attrs.field(converter=_to_version)
    author: str = attrs.field(validator=_validate_author)
    created_at: datetime = attrs.field(converter=_to_created_at)
    description: str | None = attrs.field(default=None, validator=_validate_description)
    content_hash: str = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: _rules_hash(self.policy.rules), takes_self=True),
    )

    @property
    def rules(self) -> tuple[PolicyRule, ...]:
        return self.policy.rules

    def to_dict(self) -> dict[str, Any]:
        """The bundle as plain JSON data that :meth:`from_dict` reads back to an equal bundle."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "author": self.author,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }
        if self.description is not None:
            out["description"] = self.description
        out["content_hash"] = self.content_hash
        out["rules"] = [rule.to_dict() for rule in self.policy.rules]
        return out

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<dict>") -> PolicyBundle:
        """Validate already-parsed data; raise :class:`PolicyError` listing every problem."""
        problems: list[str] = []
        bundle = _build_bundle(data, problems)
        if problems or bundle is None:
            raise PolicyError(problems=problems, source=source)
        return bundle


# --------------------------------------------------------------------------- loading


class _Mapping(dict[Any, Any]):
    """A parsed mapping that remembers which keys appeared more than once."""

    duplicates: tuple[object, ...] = ()


def _json_pairs(pairs: list[tuple[str, Any]]) -> _Mapping:
    out = _Mapping()
    dups: list[object] = []
    for key, value in pairs:
        if key in out:
            dups.append(key)
        out[key] = value
    if dups:
        out.duplicates = tuple(dups)
    return out


def _mapping_problems(
    data: Mapping[Any, Any], loc: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> list[str]:
    problems = [
        f"{loc}: duplicate key {_show(k)}" for k in getattr(data, "duplicates", ()) if k in data
    ]
    for key in data:
        if key not in allowed:
            from difflib import get_close_matches  # noqa: PLC0415 -- error path only

            hint = ""
            if isinstance(key, str) and (close := get_close_matches(key, allowed, n=1)):
                hint = f"; did you mean {close[0]!r}?"
            problems.append(
                f"{loc}: unknown key {_show(key)} (expected {', '.join(allowed)}){hint}"
            )
    problems.extend(f"{loc}: missing required key {key!r}" for key in required if key not in data)
    return problems


def _build_rule(data: object, loc: str, problems: list[str]) -> PolicyRule | None:
    if not isinstance(data, Mapping):
        problems.append(f"{loc}: a rule must be a mapping, got {_type_name(data)}")
        return None
    before = len(problems)
    problems.extend(_mapping_problems(data, loc, _RULE_KEYS, _RULE_REQUIRED))
    effect = data.get("effect")
    if "effect" in data and effect not in ("allow", "deny"):
        problems.append(f"{loc}.effect: must be 'allow' or 'deny', got {_show(effect)}")
    lists: dict[str, tuple[object, ...]] = {}
    for key, check in (("roles", _role_problem), ("permissions", _permission_problem)):
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, list):
            problems.append(f"{loc}.{key}: must be a list of strings, got {_type_name(value)}")
            continue
        lists[key] = tuple(value)
        problems.extend(_list_problems(lists[key], key, check, loc=loc))
    rule_id = data.get("id")
    if rule_id is not None and (p := _segment_problem(rule_id, "rule id")):
        problems.append(f"{loc}.id: {p}")
    description = data.get("description")
    if description is not None and (p := _text_problem(description)):
        problems.append(f"{loc}.description: {p}")
    if len(problems) > before:
        return None
    return PolicyRule(
        effect=data["effect"],
        roles=lists["roles"],
        permissions=lists["permissions"],
        id=rule_id,
        description=description,
    )


def _build_bundle(data: object, problems: list[str]) -> PolicyBundle | None:
    if not isinstance(data, Mapping):
        problems.append(f"(top level): a policy bundle must be a mapping, got {_type_name(data)}")
        return None
    problems.extend(_mapping_problems(data, "(top level)", _BUNDLE_KEYS, _BUNDLE_REQUIRED))
    checks: list[tuple[str, str | None]] = []
    if "name" in data:
        checks.append(("name", _segment_problem(data["name"], "bundle name")))
    if "version" in data:
        checks.append(("version", _version_problem(data["version"])))
    if "author" in data:
        checks.append(("author", _text_problem(data["author"], limit=256)))
    created_at: datetime | str | None = None
    if "created_at" in data:
        created_at = _parse_created_at(data["created_at"])
        checks.append(("created_at", created_at if isinstance(created_at, str) else None))
    if data.get("description") is not None:
        checks.append(("description", _text_problem(data["description"])))
    claimed = data.get("content_hash")
    if "content_hash" in data and (not isinstance(claimed, str) or not _HASH_RE.fullmatch(claimed)):
        checks.append(("content_hash", "must be 64 lowercase hex characters (a SHA-256)"))
        claimed = None
    problems.extend(f"{key}: {problem}" for key, problem in checks if problem is not None)

    rules: list[PolicyRule] = []
    raw_rules = data.get("rules")
    rules_ok = False
    if "rules" in data:
        if not isinstance(raw_rules, list):
            problems.append(f"rules: must be a list of rules, got {_type_name(raw_rules)}")
        elif len(raw_rules) > MAX_RULES:
            problems.append(f"rules: more than {MAX_RULES} rules")
        else:
            before = len(problems)
            for i, raw in enumerate(raw_rules):
                rule = _build_rule(raw, f"rules[{i}]", problems)
                if rule is not None:
                    rules.append(rule)
            ids = [r.get("id") if isinstance(r, Mapping) else None for r in raw_rules]
            problems.extend(_duplicate_id_problems(ids))
            rules_ok = len(problems) == before
    if rules_ok and claimed is not None and claimed != _rules_hash(tuple(rules)):
        problems.append(
            "content_hash: does not match the rules (they were changed after hashing, "
            "or the hash was copied from another bundle); recompute it or remove the key"
        )
    if problems:
        return None
    return PolicyBundle(
        policy=Policy(rules),
        name=data["name"],
        version=data["version"],
        author=data["author"],
        created_at=created_at,
        description=data.get("description"),
    )


@cache
def _yaml_loader() -> Any:
    try:
        import yaml  # noqa: PLC0415 -- optional extra, imported on first use
    except ImportError:
        return None
    from yaml.constructor import SafeConstructor  # noqa: PLC0415

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merge_tag = "tag:yaml.org,2002:merge"

    def construct_mapping(loader: Any, node: Any) -> _Mapping:
        seen: set[str] = set()
        dups: list[object] = []
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != merge_tag:
                if key_node.value in seen:
                    dups.append(key_node.value)
                seen.add(key_node.value)
        out = _Mapping(SafeConstructor.construct_mapping(loader, node, deep=True))
        if dups:
            out.duplicates = tuple(dups)
        return out

    class Loader(base):  # type: ignore[misc,valid-type]
        pass

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def _parse(text: str, fmt: PolicyFormat, source: str) -> object:
    def fail(problem: str, code: str | None = None) -> PolicyError:
        return PolicyError(problems=[f"{source}: {problem}"], source=source, code=code)

    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            raise fail(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise fail("invalid JSON: nested too deeply") from None
    loader = _yaml_loader()
    if loader is None:
        raise fail(
            "reading a YAML policy bundle needs PyYAML, which is not installed: "
            "pip install 'aiaas-core[yaml]' (or write the bundle as JSON)",
            code="POLICY_YAML_UNAVAILABLE",
        )
    import yaml  # noqa: PLC0415 -- present: _yaml_loader() imported it

    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        raise fail(f"invalid YAML{where}: {what}") from None
    except RecursionError:  # pragma: no cover -- PyYAML >= 6.0.2 stops at a depth limit first
        raise fail("invalid YAML: nested too deeply") from None


_SUFFIX_FORMATS: Final[dict[str, PolicyFormat]] = {
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
}


def load_policy_bundle(
    path_or_text: str | bytes | os.PathLike[str], *, format: PolicyFormat | None = None
) -> PolicyBundle:
    """Load and validate a policy bundle from a file or from document text.

    A :class:`os.PathLike` is always a file; a single-line ``str`` ending in ``.json``,
    ``.yaml`` or ``.yml`` is a file name too; any other ``str`` (or ``bytes``) is the document.
    The format is ``format`` when given, else the file's suffix, else (for text) JSON when the
    text starts with ``{`` and YAML otherwise. Every problem is reported at once in a
    :class:`PolicyError`.
    """
    if format is not None and format not in ("json", "yaml"):
        raise ValueError(f"format must be 'json', 'yaml' or None, got {format!r}")
    path: Path | None = None
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str)
        and "\n" not in path_or_text
        and Path(path_or_text).suffix.lower() in _SUFFIX_FORMATS
    ):
        path = Path(path_or_text)

    if path is not None:
        source = str(path)
        fmt = format or _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise PolicyError(
                problems=[
                    f"{source}: cannot tell the format from the suffix {path.suffix!r}; "
                    "name it .json, .yaml or .yml, or pass format='json' or 'yaml'"
                ],
                source=source,
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError(
                problems=[f"{source}: cannot read the file: {exc.strerror or exc}"], source=source
            ) from None
    elif isinstance(path_or_text, (str, bytes)):
        source = "<text>"
        raw = path_or_text.encode("utf-8") if isinstance(path_or_text, str) else path_or_text
        fmt = format
    else:
        raise TypeError(f"expected a path, str or bytes, got {_type_name(path_or_text)}")
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise PolicyError(
            problems=[f"{source}: larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB"],
            source=source,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            problems=[f"{source}: not UTF-8 (invalid byte at offset {exc.start})"], source=source
        ) from None
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    data = _parse(text, fmt, source)
    problems: list[str] = []
    bundle = _build_bundle(data, problems)
    if bundle is None:
        if path is None and isinstance(data, str) and not problems[1:]:
            problems[0] += " (to load a file, pass a pathlib.Path or a name ending .json/.yaml)"
        raise PolicyError(problems=problems, source=source)
    return bundle
