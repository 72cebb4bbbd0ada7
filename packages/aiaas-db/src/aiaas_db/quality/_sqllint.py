"""The change-set linter: SQL parsed with sqlglot, replayed into a schema model, checked.

Statements sqlglot parses only as an opaque command are split, re-parsed or recognised by their
leading keywords (see :mod:`aiaas_db.quality._lint`); the rules come from
:mod:`aiaas_db.quality._rules`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from aiaas_db.migrations._changesets import (
    _parse_header,
    normalise_script,
)
from aiaas_db.migrations._sqlsplit import split_statements
from aiaas_db.quality._rules import (
    _Checker,
    _Column,
    _is_bookkeeping,
    _Table,
)

if TYPE_CHECKING:
    from sqlglot import exp

__all__: list[str] = []


@contextlib.contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    """sqlglot logs a warning for every statement it falls back on; we report those ourselves."""
    logger = logging.getLogger("sqlglot")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _parse(sql: str) -> Any:
    """sqlglot's tree of ``sql`` (an ``exp.Command`` when it fell back), None when it failed."""
    import sqlglot  # noqa: PLC0415 -- heavy: only lint pays for it

    try:
        with _quiet_sqlglot():
            return sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.SqlglotError:
        return None


def _strip_literals(text: str) -> str:
    """``text`` without string constants and quoted identifiers (keyword searches only)."""
    return re.sub(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"", "''", text)


_DESTRUCTIVE_TEXT: Final = re.compile(
    r"\b(DROP\s+(?:TABLE|SCHEMA|DATABASE|COLUMN)|TRUNCATE|DELETE\s+FROM|"
    r"ALTER\s+COLUMN\s+\S+\s+(?:SET\s+DATA\s+)?TYPE)\b",
    re.IGNORECASE,
)
_OPAQUE_OK: Final = re.compile(
    r"(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|AGGREGATE|EXTENSION|"
    r"(?:CONSTRAINT\s+)?TRIGGER|CAST|OPERATOR|COLLATION|POLICY|PUBLICATION|ROLE|STATISTICS)|"
    r"ALTER\s+(?:FUNCTION|PROCEDURE|EXTENSION|DEFAULT\s+PRIVILEGES|ROLE|POLICY|SEQUENCE)|"
    r"DROP\s+(?:FUNCTION|PROCEDURE|EXTENSION|TRIGGER|POLICY|AGGREGATE|CAST|OPERATOR)|"
    r"GRANT|REVOKE|SET|RESET|COMMENT|ANALYZE|VACUUM|REFRESH|SECURITY\s+LABEL|SELECT|NOTIFY|"
    r"LOCK|CALL)\b",
    re.IGNORECASE,
)
_FUNCTION_NAME: Final = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+(?:[\w$]+\.)?([\w$\"]+)", re.IGNORECASE
)
_ALTER_TABLE_HEAD: Final = re.compile(
    r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?((?:[\w$]+|\"[^\"]+\")(?:\.(?:[\w$]+|\"[^\"]+\"))?)\s+",
    re.IGNORECASE,
)
_ALTER_ACTION_OK: Final = re.compile(
    r"(?:ENABLE|DISABLE|FORCE|NO\s+FORCE|OWNER\s+TO|SET\s*\(|RESET\s*\(|REPLICA\s+IDENTITY|"
    r"VALIDATE\s+CONSTRAINT|ATTACH\s+PARTITION|DETACH\s+PARTITION|CLUSTER\s+ON|SET\s+WITHOUT|"
    r"SET\s+(?:LOGGED|UNLOGGED|TABLESPACE|SCHEMA|ACCESS\s+METHOD)|INHERIT|NO\s+INHERIT|OF\s|"
    r"NOT\s+OF|DROP\s+CONSTRAINT|ALTER\s+CONSTRAINT|"
    r"ALTER\s+(?:COLUMN\s+)?[\w$\"]+\s+(?:SET|DROP|ADD|RESTART))\b",
    re.IGNORECASE,
)
_ADD_CONSTRAINT: Final = re.compile(
    r"ADD\s+(?:CONSTRAINT\s+([\w$\"]+)\s+)?(CHECK|UNIQUE|PRIMARY\s+KEY|FOREIGN\s+KEY|EXCLUDE)\b"
    r"(?:\s+NULLS\s+(?:NOT\s+)?DISTINCT)?\s*(?:\(([^()]*)\))?",
    re.IGNORECASE,
)
_RENAME_CONSTRAINT: Final = re.compile(
    r"RENAME\s+CONSTRAINT\s+[\w$\"]+\s+TO\s+([\w$\"]+)", re.IGNORECASE
)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth, start, i, n = 0, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            j = i + 1
            while j < n and not (text[j] == ch and (j + 1 >= n or text[j + 1] != ch)):
                j += 2 if text[j] == ch else 1
            i = j + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _ident(name: str) -> str:
    """An identifier as PostgreSQL stores it (unquoted names fold to lower case)."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()


def _node_name(node: Any) -> str:
    """The stored name of an Identifier/Table/Column node."""
    from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

    while isinstance(node, exp.Table | exp.Column | exp.Schema | exp.Ordered):
        node = node.this
    if isinstance(node, exp.Identifier):
        return str(node.this) if node.quoted else str(node.this).lower()
    return str(node.name if hasattr(node, "name") else node).lower()


def _columns_of(node: Any) -> tuple[str, ...] | None:
    """Plain column names of an index/constraint column list (None for expressions)."""
    from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

    if node is None:
        return None
    items = node if isinstance(node, list) else node.expressions
    names: list[str] = []
    for item in items:
        target = item.this if isinstance(item, exp.Ordered) else item
        if isinstance(target, exp.Column | exp.Identifier):
            names.append(_node_name(target))
        else:
            return None
    return tuple(names) or None


@attrs.define
class _File:
    label: str
    name: str
    text: str
    version: int
    kind: str


class _ChangeSetLinter(_Checker):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, _Table] = {}
        self.indexes: dict[str, tuple[str, bool, tuple[str, ...] | None]] = {}

    # -- statements -----------------------------------------------------------------------

    def lint_file(self, f: _File) -> None:
        text = normalise_script(f.text)
        _values, directives, _problems = _parse_header(text)
        marked = "aiaas:destructive" in directives
        cursor = 0
        for stmt in split_statements(text):
            offset = text.find(stmt, cursor)
            offset = cursor if offset < 0 else offset
            cursor = offset + len(stmt)
            line = text.count("\n", 0, offset) + 1
            loc = _Loc(f.label, line, stmt)
            self.statement(stmt, loc, up=f.kind == "up", marked=marked)

    def statement(self, stmt: str, loc: _Loc, *, up: bool, marked: bool) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        tree = _parse(stmt)
        if tree is not None and not isinstance(tree, exp.Command):
            self.expression(tree, loc, up=up, marked=marked)
            return
        head = stmt.lstrip()
        m = _ALTER_TABLE_HEAD.match(head)
        if m:
            table = _ident(m.group(1).split(".")[-1])
            for action in _split_top_level(head[m.end() :]):
                self.alter_action(table, m.group(0), action, loc, up=up, marked=marked)
            return
        if re.match(r"CREATE\s+(UNIQUE\s+)?INDEX\b", head, re.IGNORECASE):
            cleaned = re.sub(r"\bNULLS\s+(NOT\s+)?DISTINCT\b", "", head, flags=re.IGNORECASE)
            tree = _parse(cleaned)
            if tree is not None and not isinstance(tree, exp.Command):
                self.expression(tree, loc, up=up, marked=marked)
                return
        if _OPAQUE_OK.match(head):
            fm = _FUNCTION_NAME.match(head)
            if fm:
                self.name(_ident(fm.group(1)), "function", loc.at(fm.group(1)))
            return
        self.add(
            "AIAAS-L000",
            loc.here,
            f"sqlglot cannot parse this statement ({_first_words(head)} ...): the naming, type "
            "and classification rules did not see it; check it by hand or write it in a form "
            "sqlglot parses",
        )
        if up and not marked:
            dm = _DESTRUCTIVE_TEXT.search(_strip_literals(head))
            if dm:
                self._destructive(" ".join(dm.group(1).upper().split()), loc)

    def alter_action(
        self, table: str, head: str, action: str, loc: _Loc, *, up: bool, marked: bool
    ) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        tree = _parse(f"{head}{action}")
        if tree is not None and not isinstance(tree, exp.Command):
            self.expression(tree, loc, up=up, marked=marked)
            return
        cm = _ADD_CONSTRAINT.match(action)
        if cm:
            kind = " ".join(cm.group(2).upper().split())
            name = _ident(cm.group(1)) if cm.group(1) else None
            cols = (
                tuple(_ident(c.strip()) for c in cm.group(3).split(","))
                if cm.group(3) and kind != "CHECK"
                else None
            )
            mapped: dict[str, Literal["unique", "foreign", "check", "primary", "exclude"]] = {
                "CHECK": "check",
                "UNIQUE": "unique",
                "PRIMARY KEY": "primary",
                "FOREIGN KEY": "foreign",
                "EXCLUDE": "exclude",
            }
            self.constraint(mapped[kind], name, table, cols, loc.at(cm.group(1) or kind))
            if kind == "PRIMARY KEY" and cols and table in self.tables:
                self.tables[table].primary_key = cols
            return
        rm = _RENAME_CONSTRAINT.match(action)
        if rm:
            self.name(_ident(rm.group(1)), "constraint", loc.at(rm.group(1)))
            return
        if _ALTER_ACTION_OK.match(action):
            if up and not marked:
                dm = _DESTRUCTIVE_TEXT.search(_strip_literals(action))
                if dm:
                    self._destructive(" ".join(dm.group(1).upper().split()), loc)
            return
        self.add(
            "AIAAS-L000",
            loc.here,
            f"sqlglot cannot parse this ALTER TABLE {table} action ({_first_words(action)} ...): "
            "check it by hand or write it in a form sqlglot parses",
        )
        if up and not marked:
            dm = _DESTRUCTIVE_TEXT.search(_strip_literals(action))
            if dm:
                self._destructive(" ".join(dm.group(1).upper().split()), loc)

    def _destructive(self, what: str, loc: _Loc) -> None:
        self.add(
            "AIAAS-L011",
            loc.here,
            f"{what} in an up script without `-- aiaas:destructive` in its header: mark the "
            "script (the migrator then asks for confirmation before it drops data) or make the "
            "change additive",
        )

    def expression(self, tree: exp.Expression, loc: _Loc, *, up: bool, marked: bool) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        destructive: str | None = None
        if isinstance(tree, exp.Create):
            self.create(tree, loc)
        elif isinstance(tree, exp.Alter):
            destructive = self.alter(tree, loc, up=up)
        elif isinstance(tree, exp.Drop):
            kind = str(tree.args.get("kind") or "").upper()
            names = [
                _node_name(t) for t in tree.args.get("tables") or ([tree.this] if tree.this else [])
            ]
            if kind in ("TABLE", "SCHEMA", "DATABASE"):
                destructive = f"DROP {kind}"
            if up:
                for name in names:
                    if kind == "TABLE":
                        self.tables.pop(name, None)
                    elif kind == "INDEX":
                        self.indexes.pop(name, None)
        elif isinstance(tree, exp.TruncateTable):
            destructive = "TRUNCATE"
        elif isinstance(tree, exp.Delete):
            destructive = "DELETE"
        if destructive and up and not marked:
            self._destructive(destructive, loc)

    def create(self, tree: exp.Create, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        kind = str(tree.args.get("kind") or "").upper()
        if kind == "TABLE":
            self.create_table(tree, loc)
        elif kind == "INDEX":
            index = tree.this
            if not isinstance(index, exp.Index):
                return
            table = _node_name(index.args.get("table"))
            name_node = index.this
            name = _node_name(name_node) if name_node is not None else None
            params = index.args.get("params")
            cols = _columns_of(params.args.get("columns")) if params is not None else None
            unique = bool(tree.args.get("unique"))
            self.constraint(
                "unique" if unique else "index", name, table, cols, loc.at(name or "INDEX")
            )
            if name:
                self.indexes[name] = (table, unique, cols)
        elif kind in ("VIEW", "SEQUENCE", "TYPE", "TRIGGER", "SCHEMA", "FUNCTION", "PROCEDURE"):
            target = tree.this
            if target is not None:
                name = _node_name(target)
                self.name(name, kind.lower(), loc.at(name))

    def create_table(self, tree: exp.Create, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        schema = tree.this
        table_node = schema.this if isinstance(schema, exp.Schema) else schema
        name = _node_name(table_node)
        parent: str | None = None
        props = tree.args.get("properties")
        for prop in props.expressions if props is not None else ():
            if isinstance(prop, exp.PartitionedOfProperty):
                parent = _node_name(prop.this)
        table = _Table(name=name, location=loc.here, parent=parent)
        if _is_bookkeeping(name):
            return
        self.table_name(name, parent, loc.here)
        if tree.args.get("expression") is not None:  # CREATE TABLE ... AS
            table.opaque = True
        items = schema.expressions if isinstance(schema, exp.Schema) else []
        for item in items:
            if isinstance(item, exp.ColumnDef):
                self.column(table, item, loc)
            elif isinstance(item, exp.LikeProperty):
                table.opaque = True
            else:
                self.table_constraint(table, item, loc)
        self.tables[name] = table

    def column(self, table: _Table, col: exp.ColumnDef, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        name = _node_name(col.this)
        where = loc.at(name)
        kind = col.args.get("kind")
        type_text = kind.sql("postgres").lower() if kind is not None else ""
        self.name(name, "column", where)
        self.column_type(table.name, name, type_text, where)
        table.columns[name] = _Column(name, type_text, where)
        for cc in col.args.get("constraints") or []:
            ck = cc.args.get("kind")
            cname = _node_name(cc.this) if cc.this is not None else None
            cwhere = loc.at(cname) if cname else where
            if isinstance(ck, exp.PrimaryKeyColumnConstraint):
                table.primary_key = (name,)
                self.constraint("primary", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.UniqueColumnConstraint):
                self.constraint("unique", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.Reference):
                self.constraint("foreign", cname, table.name, (name,), cwhere)
            elif isinstance(ck, exp.CheckColumnConstraint):
                self.constraint("check", cname, table.name, None, cwhere)

    def table_constraint(self, table: _Table, item: exp.Expression, loc: _Loc) -> None:
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        name: str | None = None
        node = item
        if isinstance(item, exp.Constraint):
            name = _node_name(item.this)
            node = item.expressions[0] if item.expressions else item
        where = loc.at(name) if name else loc.here
        if isinstance(node, exp.PrimaryKey):
            cols = _columns_of(node)
            table.primary_key = cols
            self.constraint("primary", name, table.name, cols, where)
        elif isinstance(node, exp.UniqueColumnConstraint):
            target = node.this
            cols = _columns_of(target) if isinstance(target, exp.Schema) else None
            self.constraint("unique", name, table.name, cols, where)
        elif isinstance(node, exp.ForeignKey):
            self.constraint("foreign", name, table.name, _columns_of(node), where)
        elif isinstance(node, exp.CheckColumnConstraint):
            self.constraint("check", name, table.name, None, where)
        elif isinstance(node, exp.ExcludeColumnConstraint):
            self.constraint("exclude", name, table.name, None, where)

    def alter(self, tree: exp.Alter, loc: _Loc, *, up: bool = True) -> str | None:
        """Check an ALTER and track its effect on the tables; a down script's ``DROP COLUMN``
        is checked but does not remove the column from the schema the later change sets see
        (as a down script's ``DROP TABLE`` does not remove the table)."""
        from sqlglot import exp  # noqa: PLC0415 -- heavy: only lint pays for it

        kind = str(tree.args.get("kind") or "").upper()
        target = _node_name(tree.this)
        destructive: str | None = None
        if kind == "INDEX":
            for action in tree.args.get("actions") or []:
                if isinstance(action, exp.AlterRename):
                    new = _node_name(action.this)
                    on, unique, cols = self.indexes.pop(target, ("", False, None))
                    if on:
                        self.indexes[new] = (on, unique, cols)
                        self.constraint("unique" if unique else "index", new, on, cols, loc.at(new))
                    else:
                        self.name(new, "index", loc.at(new))
            return None
        if kind != "TABLE" or _is_bookkeeping(target):
            return None
        table = self.tables.get(target) or _Table(name=target, location=loc.here, opaque=True)
        for action in tree.args.get("actions") or []:
            if isinstance(action, exp.ColumnDef):
                self.column(table, action, loc)
            elif isinstance(action, exp.AddConstraint):
                for item in action.expressions:
                    self.table_constraint(table, item, loc)
            elif (
                isinstance(action, exp.Drop)
                and str(action.args.get("kind") or "").upper() == "COLUMN"
            ):
                destructive = "DROP COLUMN"
                for col in action.args.get("tables") or []:
                    if up:
                        table.columns.pop(_node_name(col), None)
            elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
                destructive = "ALTER COLUMN ... TYPE"
                col = _node_name(action.this)
                type_text = action.args["dtype"].sql("postgres").lower()
                self.column_type(table.name, col, type_text, loc.at(col))
                if col in table.columns:
                    table.columns[col].type = type_text
            elif isinstance(action, exp.RenameColumn):
                old, new = _node_name(action.this), _node_name(action.args.get("to"))
                self.name(new, "column", loc.at(new))
                if old in table.columns:
                    column = table.columns.pop(old)
                    column.name = new
                    table.columns[new] = column
            elif isinstance(action, exp.AlterRename):
                new = _node_name(action.this)
                self.table_name(new, table.parent, loc.here)
                self.tables.pop(target, None)
                table.name = new
                target = new
        if target in self.tables or not table.opaque:
            self.tables[target] = table
        return destructive


def _first_words(text: str, n: int = 4) -> str:
    return " ".join(text.split()[:n])


@attrs.frozen
class _Loc:
    """Where a statement starts; ``at(word)`` finds the line of a word inside it."""

    label: str
    line: int
    stmt: str

    @property
    def here(self) -> str:
        return f"{self.label}:{self.line}"

    def at(self, word: str) -> str:
        m = re.search(rf"(?<![\w$]){re.escape(word.strip(chr(34)))}(?![\w$])", self.stmt, re.I)
        line = self.line + (self.stmt.count("\n", 0, m.start()) if m else 0)
        return f"{self.label}:{line}"
