"""`caretask import` and `caretask export`: streaming NDJSON, one Task per line.

Import reads every line through the tasks service's write pipeline (caretask.service:
the body limits, validation, stamping and index extraction of a create) in worker
processes, while the main process writes batches. Memory stays constant: only a bounded
number of batches is in flight. A line whose task has an id already stored (or written
earlier in the same import) becomes a new version of that task, stamped over the stored
one as an update is, so an export imported elsewhere, or twice, converges instead of
duplicating.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import orjson

from caretask.domain.dates import now_instant
from caretask.domain.errors import DomainError, Issue
from caretask.domain.profiles import DEFAULT as DEFAULT_PROFILE
from caretask.domain.profiles import Profile
from caretask.domain.task_rules import MAX_DEPTH
from caretask.service import tasks
from caretask.service.tasks import BodyLimits
from caretask.storage.base import NewVersion
from caretask.storage.bulk import BulkRow, BulkStore
from caretask.storage.columns import index_values
from caretask.storage.urls import DatabaseURL

BATCH_LINES = 2_000
# bytes of lines in one batch: with workers * 2 batches in flight, this bounds the memory
# that long lines can take
BATCH_BYTES = 8 * 1024 * 1024
SKIP_BYTES = 64 * 1024  # the piece in which the rest of an over-long line is read and dropped
COMMIT_ROWS = 20_000


@dataclass(slots=True)
class LineError:
    line: int
    text: str  # the first issues, as the command line reports them
    issues: tuple[Issue, ...] = ()  # all of them, as the API's OperationOutcome lists them


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    aborted: bool = False


def _describe(error: DomainError) -> str:
    parts = []
    for issue in error.issues[:5]:
        where = f"{issue.expression}: " if issue.expression else ""
        parts.append(f"{where}{issue.text}")
    return "; ".join(parts)


def prepare_batch(
    lines: list[tuple[int, bytes]], now: str, now_us: int, limits: BodyLimits
) -> tuple[bytes, list[LineError]]:
    """prepare() in a worker process: the rows travel back as one JSON array, which costs
    a tenth of pickling them."""
    rows, errors = prepare(lines, now, now_us, limits)
    packed = [(r.line, r.id, r.body, r.index, r.strings, r.tokens, r.refs, r.source) for r in rows]
    return orjson.dumps(packed), errors


def unpack(packed: bytes) -> list[BulkRow]:
    return [BulkRow(*row) for row in orjson.loads(packed)]


def prepare(
    lines: list[tuple[int, bytes]], now: str, now_us: int, limits: BodyLimits
) -> tuple[list[BulkRow], list[LineError]]:
    """Read, validate, stamp and index a batch of lines through the tasks service's
    pipeline, the one a create runs on its request body, with the same limits."""
    rows, errors = [], []
    for number, raw in lines:
        if not raw.strip():
            continue
        try:
            task = tasks.parse(raw, limits)
        except DomainError as error:
            errors.append(LineError(number, _describe(error), tuple(error.issues)))
            continue
        new = tasks.build_version(
            task, task_id=tasks.imported_id(task), version_id=1, now=now, last_updated=now_us
        )
        # a known id is stamped again over its current version, as PUT does (restamp)
        uses = tasks.uses_previous(task, limits.profile)
        source = orjson.dumps(task).decode() if uses else None
        rows.append(_row(number, new, source))
    return rows, errors


def _row(number: int, new: NewVersion, source: str | None) -> BulkRow:
    index = new.index
    return BulkRow(
        line=number,
        id=new.resource["id"],
        body=orjson.dumps(new.resource).decode(),
        index=index_values(index),
        strings=index.strings,
        tokens=index.tokens,
        refs=index.refs,
        source=source,
    )


def restamp(
    row: BulkRow,
    previous: dict[str, Any],
    version_id: int,
    now: str,
    now_us: int,
    profile: Profile = DEFAULT_PROFILE,
) -> BulkRow:
    """The row as a new version of a stored task: stamped over `previous`, like a PUT in
    the profile."""
    assert row.source is not None
    new = tasks.build_version(
        orjson.loads(row.source),
        task_id=row.id,
        version_id=version_id,
        now=now,
        last_updated=now_us,
        previous=previous,
        profile=profile,
    )
    return _row(row.line, new, row.source)


def _lines(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """The stream's lines, numbered from 1, read in bounded pieces: of a line longer than
    `max_bytes` only its first max_bytes + 1 bytes are kept (enough for the parse to refuse
    it) and the rest is skipped, so no line is ever held whole."""
    number = 0
    while line := stream.readline(max_bytes + 1):
        number += 1
        if line.endswith(b"\n"):
            line = line[:-1]
        elif len(line) > max_bytes:
            while (rest := stream.readline(SKIP_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield number, line


def _batches(
    lines: Iterator[tuple[int, bytes]], size: int, max_bytes: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Batches of at most `size` lines and, beyond their first line, `max_bytes` bytes."""
    batch: list[tuple[int, bytes]] = []
    held = 0
    for number, line in lines:
        if batch and held + len(line) > max_bytes:
            yield batch
            batch, held = [], 0
        batch.append((number, line))
        held += len(line)
        if len(batch) == size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def import_ndjson(
    url: DatabaseURL,
    stream: IO[bytes],
    *,
    strict: bool = False,
    max_line_bytes: int = 1024 * 1024,
    max_depth: int = MAX_DEPTH,
    workers: int | None = None,
    on_error: Callable[[LineError], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    profile: Profile = DEFAULT_PROFILE,
) -> ImportReport:
    """Load a stream of NDJSON Tasks; `strict` writes nothing unless every line is valid.
    Each line is refused as a request body would be past `max_line_bytes` (the API's body
    limit) and `max_depth` levels of JSON nesting, and held to the `profile`'s rules as
    the API's are."""
    report = ImportReport()
    limits = BodyLimits(max_line_bytes, max_depth, profile)
    now, now_us = now_instant()
    over_stored = partial(restamp, now=now, now_us=now_us, profile=profile)
    store = BulkStore(url)
    workers = workers or os.cpu_count() or 1
    pending: list[Future[tuple[bytes, list[LineError]]]] = []
    since_commit = 0
    # Into an empty database the whole load is one transaction with the indexes built at
    # the end; otherwise it commits as it goes (unless strict) and maintains them.
    deferred = store.begin_load()
    one_transaction = strict or deferred is not None
    try:
        with ProcessPoolExecutor(workers) as pool:
            batches = _batches(_lines(stream, max_line_bytes), BATCH_LINES, BATCH_BYTES)
            done = False
            while not done or pending:
                while not done and len(pending) < workers * 2:
                    batch = next(batches, None)
                    if batch is None:
                        done = True
                    else:
                        pending.append(pool.submit(prepare_batch, batch, now, now_us, limits))
                if not pending:
                    break
                packed, errors = pending.pop(0).result()
                rows = unpack(packed)
                for error in errors:
                    report.error_count += 1
                    if len(report.errors) < 1_000:
                        report.errors.append(error)
                    if on_error:
                        on_error(error)
                if errors and strict:
                    report.aborted = True
                    for future in pending:
                        future.cancel()
                    store.rollback()
                    return report
                created, updated = store.write(
                    rows, now_us, over_stored, text_index=deferred is None
                )
                report.created += created
                report.updated += updated
                since_commit += len(rows)
                if on_progress:
                    on_progress(len(rows) + len(errors))
                if not one_transaction and since_commit >= COMMIT_ROWS:
                    store.commit()
                    store.begin()
                    since_commit = 0
        store.finish_load(deferred)
    except BaseException:
        store.rollback()
        raise
    finally:
        store.close()
    return report


def export_ndjson(url: DatabaseURL, out: IO[bytes], since: int | None = None) -> int:
    """Write every task's current version as one line each; the number written. Reads only:
    the database must be at this caretask's schema revision (base.SchemaNotCurrent)."""
    store = BulkStore(url, read_only=True)
    count = 0
    try:
        for body in store.export(since):
            out.write(body.encode() if isinstance(body, str) else orjson.dumps(body))
            out.write(b"\n")
            count += 1
    finally:
        store.close()
    return count


def progress_bar() -> Any:
    """A progress bar on a terminal (stderr), else None."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(unit=" tasks", unit_scale=True, file=sys.stderr, dynamic_ncols=True)
