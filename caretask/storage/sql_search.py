"""A SearchQuery as SQL, shared by both engines.

Builds with `?` placeholders; plan_search hands the engine its own style (Dialect.sql).
Every value is a bound parameter: no text from a request is ever spliced into SQL.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import orjson

from caretask.domain.search_params import (
    MAX_INCLUDED,
    PARAMETERS,
    CodingCondition,
    Condition,
    DateCondition,
    MissingCondition,
    ReferenceCondition,
    SearchQuery,
    StringCondition,
    TokenCondition,
)
from caretask.storage.base import SearchResult, StoredTask
from caretask.storage.columns import ALIVE, SEARCH_COLUMNS, SIDE_TABLE, Columns
from caretask.storage.dialect import Dialect
from caretask.storage.search_cache import (
    ANCHOR_EVERY,
    VERSION_SQL,
    DataVersion,
    Key,
    SearchCache,
)

DAY = 86_400_000_000


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _prefix_bounds(prefix: str) -> tuple[str, str] | None:
    """[prefix, next) for an index range scan; None when no upper bound exists."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF or 0xD7FF <= last < 0xE000:
        return None
    return prefix, prefix[:-1] + chr(last + 1)


def _string_match(norm: str, exact: str, mode: str, value: str, params: list[Any]) -> str:
    if mode == "exact":
        params.append(value)
        return f"{exact} = ?"
    if mode == "contains":
        params.append(f"%{_escape_like(value)}%")
        return f"{norm} LIKE ? ESCAPE '\\'"
    bounds = _prefix_bounds(value)
    if bounds is None:
        params.append(f"{_escape_like(value)}%")
        return f"{norm} LIKE ? ESCAPE '\\'"
    params.extend(bounds)
    return f"({norm} >= ? AND {norm} < ?)"


def _in(column: str, values: list[Any], params: list[Any]) -> str:
    params.extend(values)
    if len(values) == 1:
        return f"{column} = ?"
    return f"{column} IN ({', '.join('?' * len(values))})"


# A single FHIR date or dateTime covers at most a year (`2024`). Knowing it bounds the low
# end of a match from its high end, so that every date comparison below starts with a
# range on the (lo, hi) index; a Period (`period`) can be open, so it gets no such bound.
MAX_WIDTH = 366 * DAY
UNBOUNDED = frozenset({"period"})
# single-date parameters with a window index ((hi - lo > DAY), lo, hi), see _window
WINDOWED = frozenset({"authored-on", "due", "modified"})
LOWEST, HIGHEST = -(2**62), 2**62


def _date_match(
    lo: str, hi: str, prefix: str, slo: int, shi: int, params: list[Any], bounded: bool
) -> str:
    """FHIR R4 search on ranges: the target [lo, hi] against the search value [slo, shi].

    Each exact test is preceded by a bound on `lo` that it implies (lo <= hi, and for
    single dates hi - lo < MAX_WIDTH): redundant for the result, there for the index."""
    floor = f"{lo} >= ? AND " if bounded else ""
    if prefix == "eq":
        params.extend((slo, shi, shi))
        return f"({lo} >= ? AND {lo} <= ? AND {hi} <= ?)"
    if prefix == "ne":
        params.extend((slo, shi))
        return f"({lo} < ? OR {hi} > ?)"
    if prefix == "gt":
        params.extend((shi - MAX_WIDTH,) * bounded + (shi,))
        return f"({floor}{hi} > ?)"
    if prefix == "lt":
        params.append(slo)
        return f"{lo} < ?"
    if prefix == "ge":
        params.extend((slo - MAX_WIDTH,) * bounded + (shi, slo, shi))
        return f"({floor}({hi} > ? OR ({lo} >= ? AND {hi} <= ?)))"
    if prefix == "le":
        params.extend((shi, slo, slo, shi))
        return f"({lo} <= ? AND ({lo} < ? OR ({lo} >= ? AND {hi} <= ?)))"
    if prefix == "sa":
        params.append(shi)
        return f"{lo} > ?"
    if prefix == "eb":
        params.extend((slo, slo))
        return f"({lo} < ? AND {hi} < ?)"
    # ap: overlap with the value widened by a tenth of its width, at least a day each way
    slack = max((shi - slo) // 10, DAY)
    params.extend((slo - slack - MAX_WIDTH,) * bounded + (shi + slack, slo - slack))
    return f"({floor}{lo} <= ? AND {hi} >= ?)"


def _exists(
    table: str,
    param: str,
    params: list[Any],
    match: str = "",
    match_params: tuple[Any, ...] | list[Any] = (),
    dense: bool = True,
) -> str:
    """This task has a side-table row for the parameter (matching `match`, if given).

    Two forms with equal results. Dense (many matches): a probe per task row through the
    (task_pk, param, ...) index, so a page in pk order stops after a few hundred rows.
    Sparse: the matching pks from the (param, value, task_pk) index, then those tasks."""
    params.append(param)
    params.extend(match_params)
    extra = f" AND ({match})" if match else ""
    if dense:
        return f"EXISTS (SELECT 1 FROM {table} s WHERE s.task_pk = t.pk AND s.param = ?{extra})"
    return f"t.pk IN (SELECT s.task_pk FROM {table} s WHERE s.param = ?{extra})"


def _side_match(condition: Condition) -> tuple[str, str, list[Any]] | None:
    """(table, match SQL, its params) of a positive condition on a side-table parameter."""
    table = _side_table(condition.param)
    if table is None:
        return None
    local: list[Any] = []
    if isinstance(condition, CodingCondition) and not condition.negate:
        ors = [_coding_match(system, code, local) for system, code in condition.values]
        return table, " OR ".join(f"({o})" for o in ors), local
    if isinstance(condition, ReferenceCondition):
        typed = [f"{kind}/{ident}" for kind, ident in condition.values if kind]
        bare = [ident for kind, ident in condition.values if not kind]
        parts = []
        if typed:
            parts.append(_in("s.ref", typed, local))
        if bare:
            parts.append(_in("s.ref_id", bare, local))
        return table, " OR ".join(parts), local
    if isinstance(condition, StringCondition):
        ors = [
            _string_match("s.norm", "s.value", condition.mode, v, local) for v in condition.values
        ]
        return table, " OR ".join(ors), local
    return None


DENSE_AT = 2_000


def side_probes(query: SearchQuery, dialect: Dialect) -> list[tuple[int, str, list[Any]]]:
    """For each condition with a dense and a sparse form: (its index, a capped count).

    Positive side-table conditions, and (SQLite) a description prefix, whose B-tree range
    would otherwise be read whole and sorted when it matches a large part of the table."""
    probes = []
    for i, condition in enumerate(query.conditions):
        found = _side_match(condition)
        if found:
            table, match, params = found
            sql = (
                f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} s WHERE s.param = ? AND ({match}) "
                "LIMIT ?) c"
            )
            probes.append((i, sql, [condition.param, *params, DENSE_AT]))
        elif _ordered_range(condition):
            params = []
            match = _condition(condition, params, dialect, dense=False)
            sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM tasks t WHERE {match} LIMIT ?) c"
            probes.append((i, sql, [*params, DENSE_AT]))
    return probes


def _ordered_range(condition: Condition) -> bool:
    """A description prefix: a range over a tasks column index that often matches a large
    share of the table. (Date ranges were measured too: the index form is as fast or
    faster there on both engines, see benchmarks/scale.py.)"""
    return (
        isinstance(condition, StringCondition)
        and condition.mode == "prefix"
        and _column(condition.param, "string") is not None
    )


def _column(param: str, kind: str) -> Columns | None:
    """The tasks columns of a parameter of this type, or None if it has none."""
    spec = SEARCH_COLUMNS.get(param)
    return spec if spec is not None and spec.type == kind else None


def _side_table(param: str) -> str | None:
    """The side table that holds a parameter's values, or None for a tasks column."""
    if param.endswith(":text"):  # the texts of a CodeableConcept token
        return "task_strings"
    if param in SEARCH_COLUMNS:
        return None
    return SIDE_TABLE[PARAMETERS[param].type]


def _coding_match(system: str | None, code: str | None, params: list[Any]) -> str:
    parts = []
    if code is not None:
        params.append(code)
        parts.append("s.code = ?")
    if system == "":
        parts.append("s.system IS NULL")
    elif system is not None:
        params.append(system)
        parts.append("s.system = ?")
    return " AND ".join(parts)


def _fts_usable(value: str) -> bool:
    """SQLite's trigram index answers LIKE only without ESCAPE and for 3+ characters."""
    return len(value) >= 3 and "%" not in value and "_" not in value


def _fts_contains(value: str, params: list[Any]) -> str:
    params.append(f"%{value}%")
    return "t.pk IN (SELECT rowid FROM task_text WHERE task_text.description_norm LIKE ?)"


def _condition(condition: Condition, params: list[Any], dialect: Dialect, dense: bool) -> str:
    param = condition.param
    table = _side_table(param)
    found = _side_match(condition)
    if found:
        table, match, local = found
        return _exists(table, param, params, match, local, dense)
    if isinstance(condition, MissingCondition):
        if table:
            exists = _exists(table, param, params)
            return f"NOT {exists}" if condition.missing else exists
        column = SEARCH_COLUMNS[param].column
        if param == "patient":  # a subject that is a Patient
            clause = f"t.{column} LIKE 'Patient/%'"
            return f"NOT ({clause}) OR t.{column} IS NULL" if condition.missing else clause
        return f"t.{column} IS {'' if condition.missing else 'NOT '}NULL"
    if isinstance(condition, TokenCondition):
        clause = _in(f"t.{SEARCH_COLUMNS[param].column}", list(condition.values), params)
        return f"NOT ({clause})" if condition.negate else clause
    if isinstance(condition, CodingCondition):  # negated: the positive form is above
        coded: list[Any] = []
        ors = [_coding_match(system, code, coded) for system, code in condition.values]
        match = " OR ".join(f"({o})" for o in ors)
        return f"NOT {_exists('task_tokens', param, params, match, coded)}"
    if isinstance(condition, ReferenceCondition):
        spec = SEARCH_COLUMNS[param]
        typed = [f"{kind}/{ident}" for kind, ident in condition.values if kind]
        bare = [ident for kind, ident in condition.values if not kind]
        parts = []
        if typed:
            parts.append(_in(f"t.{spec.column}", typed, params))
        if bare:  # only `subject` has no single target type
            parts.append(_in(f"t.{spec.other}", bare, params))
        return parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})"
    if isinstance(condition, StringCondition):
        spec = SEARCH_COLUMNS[param]
        # a dense prefix kept off its index, so that the pk-ordered scan that stops at the
        # page's end is used instead of reading and sorting the range
        column = f"t.{spec.other}"
        if dense and condition.mode == "prefix":
            column = dialect.off_index.format(column)
        ors = [
            _fts_contains(v, params)
            if dialect.text_table and condition.mode == "contains" and _fts_usable(v)
            else _string_match(column, f"t.{spec.column}", condition.mode, v, params)
            for v in condition.values
        ]
        return ors[0] if len(ors) == 1 else f"({' OR '.join(ors)})"
    assert isinstance(condition, DateCondition)
    lo, hi = _range(param)
    ors = [
        # a windowed parameter's low-end bound is in its window term instead (see where)
        _date_match(lo, hi, p, slo, shi, params, param not in UNBOUNDED | WINDOWED)
        for p, slo, shi in condition.values
    ]
    return ors[0] if len(ors) == 1 else f"({' OR '.join(ors)})"


def _range(param: str) -> tuple[str, str]:
    """The low and high end columns of a date parameter's range."""
    spec = SEARCH_COLUMNS[param]
    return f"t.{spec.column}", f"t.{spec.other}"


_NEVER_NULL = frozenset({"_id", "status", "intent", "_lastUpdated"})


def _skips_deleted(condition: Condition) -> bool:
    """Whether a condition alone matches no deleted task (so the query needs no ALIVE
    term, which would cost counts their covering indexes)."""
    if _side_match(condition) is not None:
        return True
    if condition.param in _NEVER_NULL:
        # a positive status or intent is a valid code, never ''
        return (
            isinstance(condition, TokenCondition)
            and condition.param != "_id"
            and not condition.negate
            and "" not in condition.values
        )
    if isinstance(condition, MissingCondition):
        return not condition.missing
    if isinstance(condition, DateCondition):  # NULL fails every test but ne's, to be safe
        return all(prefix != "ne" for prefix, _, _ in condition.values)
    if isinstance(condition, TokenCondition | CodingCondition):
        return not condition.negate
    return isinstance(condition, ReferenceCondition | StringCondition)


def where(
    query: SearchQuery, dialect: Dialect, dense: frozenset[int] = frozenset()
) -> tuple[str, list[Any]]:
    """The WHERE clause. `dense`: the indexes of conditions that match much of the table
    (see _exists). Deleted tasks never match."""
    params: list[Any] = []
    clauses = [
        _condition(c, params, dialect, dense=i in dense) for i, c in enumerate(query.conditions)
    ]
    if not any(_skips_deleted(c) for c in query.conditions):
        clauses.append(ALIVE)
    for param, dates in _windowed_dates(query):  # leading terms: placeholders come first
        window_params: list[Any] = []
        clauses.insert(0, _window(param, dates, dialect, window_params))
        params[:0] = window_params
    return (" WHERE " + " AND ".join(f"({c})" for c in clauses) if clauses else ""), params


def _windowed_dates(query: SearchQuery) -> Iterator[tuple[str, list[DateCondition]]]:
    """Each windowed date parameter of the query with its conditions, in a fixed order."""
    for param in sorted(WINDOWED):
        dates = [c for c in query.conditions if isinstance(c, DateCondition) and c.param == param]
        if dates:
            yield param, dates


def _lo_bounds(prefix: str, slo: int, shi: int, width: int) -> tuple[int, int]:
    """The [low, high] that a match's low end must lie in, if its range is at most `width`
    wide: implied by the FHIR comparison (and lo <= hi), so redundant for the result."""
    if prefix == "eq":
        return slo, shi
    if prefix in ("gt", "sa"):
        return (shi + 1 - width if prefix == "gt" else shi + 1), HIGHEST
    if prefix == "ge":
        return slo - width, HIGHEST
    if prefix in ("lt", "eb"):
        return LOWEST, slo - 1
    if prefix == "le":
        return LOWEST, shi
    if prefix == "ap":
        slack = max((shi - slo) // 10, DAY)
        return slo - slack - width, shi + slack
    return LOWEST, HIGHEST  # ne


def _window(param: str, dates: list[DateCondition], dialect: Dialect, params: list[Any]) -> str:
    """One range on the window index for all of a parameter's date conditions (ANDed).

    A single date covers at most a year, so from `hi` alone the low end is known only to
    within a year; but nearly all stored values are a day or narrower. The index keeps the
    narrow and the wide apart, so the narrow ones get a bound a day wide: two index ranges,
    OR-ed, instead of a year of entries."""
    branches = _window_branches(param, dates, dialect, params)
    return " OR ".join(f"({b})" for b in branches)


def _window_branches(
    param: str, dates: list[DateCondition], dialect: Dialect, params: list[Any]
) -> list[str]:
    """The window's two index ranges: narrow values, then wide ones."""
    lo, hi = _range(param)
    wide = f"({hi} - {lo} > {DAY})"
    no, yes = dialect.false, dialect.true
    branches = []
    for flag, width in ((no, DAY), (yes, MAX_WIDTH)):
        low, high = LOWEST, HIGHEST
        for condition in dates:
            # comma-separated values are ORed: their window is the hull of each value's
            value_bounds = [_lo_bounds(p, a, b, width) for p, a, b in condition.values]
            low = max(low, min(b[0] for b in value_bounds))
            high = min(high, max(b[1] for b in value_bounds))
        params.extend((low, high))
        branches.append(f"{wide} = {flag} AND {lo} >= ? AND {lo} <= ?")
    return branches


def order_by(query: SearchQuery) -> str:
    if not query.sort:
        return " ORDER BY t.pk"
    keys = [
        f"t.{SEARCH_COLUMNS[p].sort} {'DESC' if d else 'ASC'} NULLS LAST" for p, d in query.sort
    ]
    return " ORDER BY " + ", ".join([*keys, "t.id ASC"])


Where = tuple[str, list[Any]]  # a WHERE clause (or "") and its parameters, from where()


def select_page(
    query: SearchQuery,
    columns: str,
    clause: Where,
    after_pk: int = 0,
    offset: int | None = None,
    few: bool = False,
) -> tuple[str, list[Any]]:
    """The page's rows plus one, so that `has_more` is known without a count.

    `after_pk` and `offset`: resume from a page anchor (default order only). `few`: the
    query's date window holds fewer than DENSE_AT tasks (date_probe), so the page is
    sorted from its matches (by an expression no index serves) rather than found by
    walking the pk index."""
    sql_where, params = clause[0], list(clause[1])
    if after_pk:
        sql_where = f"{sql_where} AND t.pk > ?" if sql_where else " WHERE t.pk > ?"
        params.append(after_pk)
    order = " ORDER BY t.pk + 0" if few else order_by(query)
    sql = f"SELECT {columns} FROM tasks t{sql_where}{order} LIMIT ? OFFSET ?"
    return sql, [*params, query.count + 1, query.offset if offset is None else offset]


def date_probe(query: SearchQuery, dialect: Dialect) -> tuple[str, list[Any]] | None:
    """A capped count of the tasks in the window of the query's first windowed date
    parameter: a superset of its matches, read from the window index alone (no table
    rows), so it costs about as little when the window holds thousands as when it
    holds none. None when the query has no windowed date."""
    for param, dates in _windowed_dates(query):
        # each index range counted apart: PostgreSQL's planner read their OR along the
        # wrong index, many times slower than each range alone
        bounds: list[Any] = []
        branches = _window_branches(param, dates, dialect, bounds)
        capped = "(SELECT COUNT(*) FROM (SELECT 1 FROM tasks t WHERE {} LIMIT ?) c)"
        counts = [capped.format(branch) for branch in branches]
        return "SELECT " + " + ".join(counts), [*bounds[:2], DENSE_AT, *bounds[2:], DENSE_AT]
    return None


def select_anchors(clause: Where) -> tuple[str, list[Any]]:
    """(position, pk) of every ANCHOR_EVERY-th match in the default order."""
    sql = (
        "SELECT rn, pk FROM (SELECT t.pk AS pk, row_number() OVER (ORDER BY t.pk) AS rn "
        f"FROM tasks t{clause[0]}) a WHERE rn % ? = 0 ORDER BY rn"
    )
    return sql, [*clause[1], ANCHOR_EVERY]


def select_count(query: SearchQuery, clause: Where) -> tuple[str, list[Any]]:
    found = _side_match(query.conditions[0]) if len(query.conditions) == 1 else None
    if found:  # from the side table's covering index alone, without touching tasks
        table, match, local = found
        sql = f"SELECT COUNT(DISTINCT s.task_pk) FROM {table} s WHERE s.param = ? AND ({match})"
        return sql, [query.conditions[0].param, *local]
    return f"SELECT COUNT(*) FROM tasks t{clause[0]}", list(clause[1])


def known_total(query: SearchQuery, page_size: int, has_more: bool) -> int | None:
    """The total when the page already shows it (first page, nothing more), else None."""
    if query.offset == 0 and not has_more and query.count > 0:
        return page_size
    return None


def wants_total(query: SearchQuery) -> bool:
    return query.total != "none" or query.summary_count


def select_included(query: SearchQuery, ids: list[str], columns: str) -> tuple[str, list[Any]]:
    """The Tasks that the page's tasks point at (_include) or that point at them
    (_revinclude), through part-of / based-on; at most MAX_INCLUDED of them."""
    parts: list[str] = []
    params: list[Any] = []
    marks = ", ".join("?" * len(ids))
    for param in query.includes:
        parts.append(
            "t.id IN (SELECT substr(r.ref, 6) FROM task_refs r JOIN tasks p ON p.pk = r.task_pk "
            f"WHERE p.id IN ({marks}) AND r.param = ? AND r.ref LIKE 'Task/%')"
        )
        params += [*ids, param]
    for param in query.revincludes:
        parts.append(
            f"t.pk IN (SELECT r.task_pk FROM task_refs r WHERE r.param = ? AND r.ref IN ({marks}))"
        )
        params += [param, *(f"Task/{i}" for i in ids)]
    sql = (
        f"SELECT {columns} FROM tasks t WHERE ({' OR '.join(parts)}) "
        f"AND t.id NOT IN ({marks}) AND {ALIVE} ORDER BY t.pk LIMIT ?"
    )
    return sql, [*params, *ids, MAX_INCLUDED]


Statement = tuple[str, list[Any]]
Rows = list[tuple[Any, ...]]


def stored_task(row: tuple[Any, ...]) -> StoredTask:
    """(id, version_id, resource JSON text) as a StoredTask."""
    return StoredTask(row[0], row[1], orjson.loads(row[2]))


def plan_search(
    query: SearchQuery, cache: SearchCache, dialect: Dialect, *, columns: str | None = None
) -> Generator[Statement, Rows, SearchResult]:
    """The statements of one search in the engine's placeholder style, as a generator that
    the engine feeds with rows. `columns`: of each task row (default: id, version, body).

    Without I/O of its own, so that the synchronous SQLite engine and the asynchronous
    PostgreSQL engine run the same plan: page (from an anchor when deep), total (from
    the cache when the data is unchanged), and included tasks."""
    if columns is None:
        columns = f"t.id, t.version_id, {dialect.body('t.resource')}"
    plan = _plan(query, cache, dialect, columns)
    try:
        sql, params = next(plan)
        while True:
            sql, params = plan.send((yield dialect.sql(sql), params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _plan(
    query: SearchQuery, cache: SearchCache, dialect: Dialect, columns: str
) -> Generator[Statement, Rows, SearchResult]:
    # a page in pk order reads a dense condition along the pk; counts, anchors and sorted
    # pages read every match anyway, which the index-friendly forms do best
    dense: set[int] = set()
    if not query.sort and query.count > 0:
        for index, sql, params in side_probes(query, dialect):
            rows = yield sql, params
            if rows[0][0] >= DENSE_AT:
                dense.add(index)
    # built once per search: the index-friendly clause (the cache key), and the page's
    clause = where(query, dialect)
    paged = where(query, dialect, frozenset(dense)) if dense else clause
    key: Key = clause[0], tuple(clause[1])
    # PostgreSQL: when a date window holds few tasks (a week at the edge of the data),
    # its planner still walked the pk index to fill the page, reading up to the whole
    # table. A capped count of the window tells when it is few, and such a page is then
    # sorted from the date index's matches.
    few = False
    probe = None
    if dialect.probes_date_window and not query.sort and query.count > 0:
        probe = date_probe(query, dialect)
    if probe:
        rows = yield probe
        few = rows[0][0] < DENSE_AT
    version: DataVersion | None = None

    def current() -> Generator[Statement, Rows, DataVersion]:
        rows = yield VERSION_SQL, []
        return rows[0][0], rows[0][1]

    tasks: list[StoredTask] = []
    has_more = False
    if query.count > 0:
        after_pk, offset = 0, query.offset
        if not query.sort and query.offset >= ANCHOR_EVERY:
            version = yield from current()
            if not cache.has_anchors(key, version):
                rows = yield select_anchors(clause)
                cache.remember_anchors(key, version, [(r[0], r[1]) for r in rows])
            position, after_pk = cache.anchor(key, version, query.offset)
            offset = query.offset - position
        rows = yield select_page(query, columns, paged, after_pk, offset, few)
        has_more = len(rows) > query.count
        tasks = [stored_task(r) for r in rows[: query.count]]
    total = None
    if wants_total(query):
        total = known_total(query, len(tasks), has_more)
        if total is None:
            if version is None:
                version = yield from current()
            total = cache.count(key, version)
            if total is None:
                rows = yield select_count(query, clause)
                total = rows[0][0]
                cache.remember_count(key, version, total)
    included: list[StoredTask] = []
    if tasks and (query.includes or query.revincludes):
        rows = yield select_included(query, [t.id for t in tasks], columns)
        included = [stored_task(r) for r in rows]
    return SearchResult(total=total, tasks=tasks, has_more=has_more, included=included)
