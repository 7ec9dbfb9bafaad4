"""The `caretask` command: serve, migrate and manage OAuth clients."""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import sys
from typing import Any

import orjson

from caretask.auth import scopes, secrets
from caretask.config import BadSetting, Settings, host_list
from caretask.storage import SchemaNotCurrent, open_storage, schema
from caretask.storage.base import ClientRecord, SchemaTooNew
from caretask.storage.urls import BadDatabaseURL, DatabaseURL

DEFAULT_SCOPE = "system/Task.read system/Task.write"


def _database_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database",
        default=None,
        help="database URL (default: $CARETASK_DATABASE_URL or sqlite:///./caretask.db)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caretask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    _database_arg(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.add_argument("--base-url", default=None, help="public URL for Location and fullUrl")
    serve.add_argument(
        "--allowed-hosts",
        default=None,
        help="Host header names accepted, comma-separated ('*': any); default: with "
        "--base-url any, else the loopback names and --host",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=None, help="request body limit (default 1 MiB)"
    )
    serve.add_argument("--token-ttl", type=int, default=None, help="access token lifetime, s")
    serve.add_argument("--log-level", default="info")

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _database_arg(migrate)

    clients = sub.add_parser("clients", help="manage OAuth clients")
    csub = clients.add_subparsers(dest="clients_command", required=True)
    create = csub.add_parser("create", help="create a client; prints its secret once")
    create.add_argument("name")
    create.add_argument("--scope", default=DEFAULT_SCOPE)
    _database_arg(create)
    revoke = csub.add_parser("revoke", help="revoke a client and every token it holds")
    revoke.add_argument("client_id")
    _database_arg(revoke)

    load = sub.add_parser("import", help="load Tasks from an NDJSON file (- for stdin)")
    load.add_argument("file")
    load.add_argument(
        "--strict", action="store_true", help="write nothing unless every line is valid"
    )
    load.add_argument("--workers", type=int, default=None, help="validating processes")
    load.add_argument(
        "--max-line-bytes",
        type=int,
        default=None,
        help="longest line accepted (default: the request body limit, $CARETASK_MAX_BODY_BYTES)",
    )
    _database_arg(load)

    dump = sub.add_parser("export", help="write every Task's current version as NDJSON")
    dump.add_argument("--since", default=None, help="only tasks changed at or after this date")
    _database_arg(dump)

    trail = sub.add_parser("audit", help="print the audit trail, oldest first")
    trail.add_argument("--client", default=None, help="only this client id's requests")
    trail.add_argument("--since", default=None, help="only requests at or after this date")
    trail.add_argument(
        "--format",
        choices=["text", "fhir"],
        default="text",
        help="text: one tab-separated line each; fhir: NDJSON of FHIR AuditEvents",
    )
    _database_arg(trail)

    demo = sub.add_parser("demo-data", help="write N realistic synthetic Tasks as NDJSON")
    demo.add_argument("count", type=int)
    demo.add_argument("--seed", type=int, default=1)
    return parser


def _fail(message: str) -> int:
    print(f"caretask: {message}", file=sys.stderr)
    return 2


async def _create_client(url: DatabaseURL, name: str, scope: str) -> dict[str, str]:
    storage = open_storage(url)
    try:
        client_id, secret = secrets.new_client_id(), secrets.new_secret()
        record = ClientRecord(client_id, name, secrets.hash_secret(secret), scope, revoked=False)
        await storage.create_client(record)
        return {"client_id": client_id, "client_secret": secret, "scope": scope}
    finally:
        await storage.close()


async def _revoke_client(url: DatabaseURL, client_id: str) -> bool:
    storage = open_storage(url)
    try:
        return await storage.revoke_client(client_id)
    finally:
        await storage.close()


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus caretask's own loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["caretask"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _serve(args: argparse.Namespace, url: DatabaseURL) -> int:
    import uvicorn

    from caretask.http.responses import EVERY_RESPONSE

    base = Settings.from_env()  # the environment's settings, the command line's on top
    settings = dataclasses.replace(
        base,
        database_url=url.raw,
        base_url=args.base_url.rstrip("/") if args.base_url else base.base_url,
        max_body_bytes=args.max_body_bytes or base.max_body_bytes,
        token_ttl=args.token_ttl or base.token_ttl,
        allowed_hosts=host_list(args.allowed_hosts or "") or base.allowed_hosts,
    )
    accepted = settings.accepted_hosts(args.host)  # the bound host is known only here
    settings = dataclasses.replace(
        settings, allowed_hosts=tuple(sorted(accepted)) if accepted is not None else ("*",)
    )
    os.environ.update(settings.to_env())
    uvicorn.run(
        "caretask.http.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=_log_config(),
        access_log=False,  # uvicorn's access log prints query strings, which carry PHI
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        h11_max_incomplete_event_size=64 * 1024,
        # httptools with header timeouts and head limits (caretask.http.timeouts); a
        # string, so that worker processes import it
        http="caretask.http.timeouts:EdgeProtocol",
        headers=list(EVERY_RESPONSE),
        timeout_keep_alive=settings.keepalive_timeout,
    )
    return 0


def _demo_data(count: int, seed: int) -> int:
    from caretask.bulk.demo import generate

    out = sys.stdout.buffer
    for task in generate(count, seed=seed):
        out.write(orjson.dumps(task) + b"\n")
    out.flush()
    return 0


def _import(args: argparse.Namespace, url: DatabaseURL) -> int:
    from caretask.bulk.ndjson import LineError, import_ndjson, progress_bar

    if args.max_line_bytes is not None and args.max_line_bytes <= 0:
        return _fail("--max-line-bytes must be greater than 0")
    base = Settings.from_env()  # a line is held to the limits of a request body
    settings = dataclasses.replace(base, max_body_bytes=args.max_line_bytes or base.max_body_bytes)
    stream = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    bar = progress_bar()

    def on_error(error: LineError) -> None:
        message = f"line {error.line}: {error.text}"
        (bar.write if bar else lambda m: print(m, file=sys.stderr))(message)

    try:
        report = import_ndjson(
            url,
            stream,
            strict=args.strict,
            max_line_bytes=settings.max_body_bytes,
            max_depth=settings.max_json_depth,
            workers=args.workers,
            on_error=on_error,
            on_progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
        if stream is not sys.stdin.buffer:
            stream.close()
    if report.aborted:
        print(
            f"import aborted: {report.error_count} invalid line(s); nothing was written",
            file=sys.stderr,
        )
        return 1
    print(
        f"imported {report.created} new and {report.updated} updated tasks; "
        f"skipped {report.error_count} invalid line(s)",
        file=sys.stderr,
    )
    return 1 if report.error_count else 0


def _export(args: argparse.Namespace, url: DatabaseURL) -> int:
    from caretask.bulk.ndjson import export_ndjson

    try:
        since = _since(args.since)
    except ValueError as error:
        return _fail(str(error))
    try:
        count = export_ndjson(url, sys.stdout.buffer, since)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"exported {count} tasks", file=sys.stderr)
    return 0


def _since(value: str | None) -> int | None:
    from caretask.domain.dates import parse_range

    if value is None:
        return None
    bounds = parse_range(value)
    if bounds is None:
        raise ValueError(f"--since: '{value}' is not a FHIR date or dateTime")
    return bounds[0]


async def _audit(args: argparse.Namespace, url: DatabaseURL, since: int | None) -> int:
    from caretask.domain import audit

    storage = open_storage(url)
    out = sys.stdout
    count, after = 0, 0
    try:
        while batches := await storage.audit_batches(args.client, since, after, 100):
            for record in audit.select(batches, args.client, since):
                if args.format == "fhir":
                    out.write(orjson.dumps(audit.audit_event(record)).decode() + "\n")
                else:
                    out.write(audit.text_line(record) + "\n")
                count += 1
            after = batches[-1][0]
        out.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        await storage.close()
    print(f"{count} audit records", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo-data":
        return _demo_data(args.count, args.seed)
    try:
        url = DatabaseURL.parse(args.database)
        schema.migrate(url)
        if args.command == "migrate":
            print(f"database schema at revision {schema.head_revision()}", file=sys.stderr)
            return 0
        if args.command == "serve":
            return _serve(args, url)
        if args.command == "import":
            return _import(args, url)
        if args.command == "export":
            return _export(args, url)
        if args.command == "audit":
            try:
                since = _since(args.since)
            except ValueError as error:
                return _fail(str(error))
            return asyncio.run(_audit(args, url, since))
        if args.clients_command == "create":
            bad = scopes.invalid_scopes(args.scope)
            if bad or not args.scope.strip():
                return _fail(f"invalid scope: {' '.join(bad) or '(empty)'}")
            out = asyncio.run(_create_client(url, args.name, " ".join(args.scope.split())))
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
            return 0
        if not asyncio.run(_revoke_client(url, args.client_id)):
            return _fail(f"no active client {args.client_id}")
        print(f"revoked {args.client_id}", file=sys.stderr)
        return 0
    except (BadDatabaseURL, BadSetting, SchemaTooNew, SchemaNotCurrent) as error:
        return _fail(str(error))
