from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aiaas_db import split_statements


def test_plain_statements() -> None:
    assert split_statements("SELECT 1; SELECT 2;\n") == ["SELECT 1", "SELECT 2"]
    assert split_statements("SELECT 1") == ["SELECT 1"]
    assert split_statements("") == []
    assert split_statements(" ;; \n -- only a comment\n; /* x */ ;") == []


def test_semicolons_inside_literals_and_identifiers() -> None:
    script = """
    INSERT INTO t VALUES ('a;b', 'it''s; fine');
    SELECT "we;ird" FROM "x;y";
    SELECT E'back\\'slash;', e'\\\\';
    SELECT 1
    """
    assert split_statements(script) == [
        "INSERT INTO t VALUES ('a;b', 'it''s; fine')",
        'SELECT "we;ird" FROM "x;y"',
        "SELECT E'back\\'slash;', e'\\\\'",
        "SELECT 1",
    ]


def test_dollar_quotes_and_comments() -> None:
    script = """
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$
    BEGIN
      PERFORM 1; -- ; inside
      RETURN 2;
    END
    $body$;
    DO $$ BEGIN RAISE NOTICE 'a;'; END $$;
    -- a comment; with a semicolon
    /* block ; /* nested ; */ still comment ; */
    SELECT $1;
    """
    out = split_statements(script)
    assert len(out) == 3
    assert out[0].startswith("CREATE FUNCTION")
    assert out[0].endswith("$body$")
    assert out[1] == "DO $$ BEGIN RAISE NOTICE 'a;'; END $$"
    assert out[2].endswith("SELECT $1")


def test_identifier_with_dollar_is_no_dollar_quote() -> None:
    assert split_statements("SELECT a$b$c FROM t; SELECT 2") == ["SELECT a$b$c FROM t", "SELECT 2"]


def test_e_inside_identifier_is_no_escape_prefix() -> None:
    # 'name' follows an identifier ending in e: not an E'' string, backslash is literal.
    assert split_statements("SELECT 'a\\'; SELECT 2") == ["SELECT 'a\\'", "SELECT 2"]
    assert split_statements("SELECT some'x\\'; SELECT 2") == ["SELECT some'x\\'", "SELECT 2"]


def test_begin_atomic_bodies() -> None:
    script = """
    CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql
    BEGIN ATOMIC
      SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;
      SELECT 2;
    END;
    SELECT 3;
    """
    out = split_statements(script)
    assert len(out) == 2
    assert out[0].endswith("END")
    assert out[1] == "SELECT 3"


def test_unterminated_constructs_consume_the_rest() -> None:
    assert split_statements("SELECT 'abc; SELECT 2") == ["SELECT 'abc; SELECT 2"]
    assert split_statements("SELECT $x$ a; b") == ["SELECT $x$ a; b"]
    assert split_statements("SELECT 1 /* open ; comment") == ["SELECT 1 /* open ; comment"]


_atoms = st.sampled_from(
    [
        "SELECT 1",
        "SELECT 'a;b'",
        "SELECT 'it''s'",
        'SELECT "x;y"',
        "SELECT $$;$$",
        "SELECT $t$ ; $t$",
        "SELECT E'\\';'",
        "SELECT 1 /* ; */",
        "SELECT 2 -- ;\n",
        "CREATE TABLE t (a int)",
    ]
)


@given(st.lists(_atoms, min_size=1, max_size=8), st.sampled_from([";", ";\n", " ;\n\n"]))
def test_joined_statements_split_back(parts: list[str], sep: str) -> None:
    script = sep.join(parts) + sep
    assert split_statements(script) == [p.strip() for p in parts]
