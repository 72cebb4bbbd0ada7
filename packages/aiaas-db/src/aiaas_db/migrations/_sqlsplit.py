"""Split a PostgreSQL script into statements, the way the server's lexer would see them.

Semicolons inside string constants (``'...'``, ``E'...'`` with backslash escapes), quoted
identifiers, dollar-quoted bodies (``$fn$ ... $fn$``), ``--`` and (nested) ``/* */`` comments,
and SQL-standard function bodies (``BEGIN ATOMIC ... END``) do not end a statement.
Statements that hold nothing but comments and whitespace are dropped, and so are the ``--``
comment lines that lead a statement (script headers and notes).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["split_statements"]

_DOLLAR_TAG: Final = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_IDENT_CHAR: Final = re.compile(r"[A-Za-z0-9_$\x80-\uffff]")


def _only_comments(text: str) -> bool:
    return not _strip_comments(text).strip()


def _strip_comments(text: str) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _skip_block_comment(text: str, i: int) -> int:
    depth, i, n = 1, i + 2, len(text)
    while i < n and depth:
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _skip_quoted(text: str, i: int, quote: str, *, backslash: bool) -> int:
    """Index just past the closing ``quote`` of the constant opened at ``i``."""
    i, n = i + 1, len(text)
    while i < n:
        ch = text[i]
        if backslash and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:  # doubled quote is an escaped quote
                i += 2
                continue
            return i + 1
        i += 1
    return n


def split_statements(script: str) -> list[str]:
    """Return the statements of ``script``, each stripped and without its trailing semicolon."""
    statements: list[str] = []
    start, i, n = 0, 0, len(script)
    atomic_depth = 0  # > 0 inside BEGIN ATOMIC ... END (CASE ... END nests inside)
    prev_word = ""
    while i < n:
        ch = script[i]
        if ch == "-" and script.startswith("--", i):
            j = script.find("\n", i)
            i = n if j < 0 else j + 1
        elif ch == "/" and script.startswith("/*", i):
            i = _skip_block_comment(script, i)
        elif ch == "'":
            escaped = i > 0 and script[i - 1] in "eE" and not _is_ident_tail(script, i - 1)
            i = _skip_quoted(script, i, "'", backslash=escaped)
        elif ch == '"':
            i = _skip_quoted(script, i, '"', backslash=False)
        elif ch == "$" and (i == 0 or not _IDENT_CHAR.match(script[i - 1])):
            m = _DOLLAR_TAG.match(script, i)
            if m is None:
                i += 1
                continue
            tag = m.group(0)
            end = script.find(tag, m.end())
            i = n if end < 0 else end + len(tag)
        elif ch == ";" and atomic_depth == 0:
            _append(statements, script[start:i])
            i += 1
            start = i
            prev_word = ""
        elif ch.isalpha() or ch == "_":
            if i > 0 and _IDENT_CHAR.match(script[i - 1]):
                i += 1
                continue
            m = _WORD.match(script, i)
            assert m is not None
            word = m.group(0).upper()
            if (word == "ATOMIC" and prev_word == "BEGIN") or (atomic_depth and word == "CASE"):
                atomic_depth += 1
            elif atomic_depth and word == "END":
                atomic_depth -= 1
            prev_word = word
            i = m.end()
        else:
            i += 1
    _append(statements, script[start:])
    return statements


def _is_ident_tail(script: str, pos: int) -> bool:
    """True when the ``e``/``E`` at ``pos`` ends a longer identifier (so it is no E'' prefix)."""
    return pos > 0 and bool(_IDENT_CHAR.match(script[pos - 1]))


def _append(statements: list[str], text: str) -> None:
    if _only_comments(text):
        return
    text = text.strip()
    # Leading ``--`` lines (headers, notes) carry nothing the server needs; block comments stay
    # (optimizer hints such as ``/*+ ... */`` live there).
    while text.startswith("--"):
        newline = text.find("\n")
        if newline < 0:  # pragma: no cover - a comment-only text was dropped above
            return
        text = text[newline + 1 :].lstrip()
    statements.append(text)
