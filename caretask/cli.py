"""The `caretask` command: serve, migrate and manage OAuth clients.

Every failure is one line on stderr, `caretask: <what is wrong>`, and exit status 2 for a
usage error (as argparse's), 1 for anything else; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import orjson
import psycopg
import sqlalchemy

from caretask.auth import scopes, secrets
from caretask.config import METRICS_OFF, SETTINGS, BadSetting, Setting, Settings, env_value
from caretask.domain.people import redirect_origin, reference_problem, username_problem
from caretask.storage import SchemaNotCurrent, open_storage, schema
from caretask.storage.base import ClientRecord, SchemaTooNew, Storage, UserRecord
from caretask.storage.urls import BadDatabaseURL, DatabaseURL

if TYPE_CHECKING:
    from starlette.applications import Starlette

T = TypeVar("T")

DEFAULT_SCOPE = "system/Task.read system/Task.write"
DEFAULT_GRACE = 86_400  # a day: time to give every deployment of a client its new secret
MAX_GRACE = 30 * 86_400
PUBLIC_SCOPE = "user/Task.*"
MIN_PASSWORD = 8  # characters of a password given on standard input
# what a database can raise, wrapped (SQLAlchemy, in migrations) or not (the storage engines)
DATABASE_ERRORS = (sqlite3.Error, psycopg.Error, sqlalchemy.exc.SQLAlchemyError)
# create: a client's secret or a user's password; set-password: a generated one
WRITES_STDOUT = {"export", "audit", "demo-data", "create", "list", "set-password"}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# bounds of numeric options, checked after parsing: (attribute, lowest, highest)
NUMBERS = (("port", 0, 65535), ("workers", 1, None), ("count", 0, None), ("seed", 0, None))
_DATABASE = next(s for s in SETTINGS if s.name == "database_url")  # every command's --database
# an option's name by its attribute in the parsed arguments
_FLAGS = {s.name: s.declared.flag for s in SETTINGS if s.declared.flag is not None}


class CLIError(Exception):
    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's prints the whole usage first
        raise CLIError(f"{message} (see {self.prog} --help)", 2)


def _setting_flag(parser: argparse.ArgumentParser, setting: Setting) -> None:
    """The option of a declared setting (config.Settings): its value, if given, stands in
    for the environment's."""
    flag = setting.declared.flag
    assert flag is not None
    parser.add_argument(
        flag,
        dest=setting.name,
        metavar=flag.lstrip("-").replace("-", "_").upper(),
        # numbers are parsed here, so that argparse names a bad one as it does other
        # options; texts are checked as UTF-8 first (_check_arguments), then parsed
        type=setting.kind.parse if setting.kind.number else str,
        default=None,
        help=f"{setting.declared.help} (default: ${setting.env} or {setting.shown_default})",
    )


def _database_arg(parser: argparse.ArgumentParser) -> None:
    _setting_flag(parser, _DATABASE)


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as options of `serve`, parsed and checked; a text option that
    comes to nothing ("", or "," for a list) is not given, as an empty environment
    variable is not."""
    given: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.declared.flag is None or setting is _DATABASE:
            continue  # the database URL is parsed for every command (_main)
        raw = getattr(args, setting.name)
        value = raw if setting.kind.number or raw is None else setting.kind.parse(raw)
        if value is None or (not setting.kind.number and not value):
            continue
        problem = setting.problem(value, setting.declared.flag)
        if problem is not None:
            raise CLIError(problem, 2)
        given[setting.name] = value
    return given


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="caretask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the FHIR server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    _database_arg(serve)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    for setting in SETTINGS:
        if setting.declared.flag is not None and setting is not _DATABASE:
            _setting_flag(serve, setting)
    serve.add_argument("--log-level", default="info")

    migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    _database_arg(migrate)

    clients = sub.add_parser("clients", help="manage OAuth clients")
    csub = clients.add_subparsers(dest="clients_command", required=True)
    create = csub.add_parser("create", help="create a client; prints its secret once")
    create.add_argument("name")
    create.add_argument(
        "--scope", default=None, help=f"default: {DEFAULT_SCOPE} ({PUBLIC_SCOPE} with --public)"
    )
    create.add_argument(
        "--public",
        action="store_true",
        help="an app people sign in to (authorization code with PKCE): no secret",
    )
    create.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        dest="redirect_uris",
        help="where a public client's sign-ins return (exactly); repeat for more",
    )
    _database_arg(create)
    revoke = csub.add_parser("revoke", help="revoke a client and every token it holds")
    revoke.add_argument("client_id")
    _database_arg(revoke)
    listing = csub.add_parser("list", help="every client as JSON lines (never its secret)")
    _database_arg(listing)
    rotate = csub.add_parser(
        "rotate", help="give a client a new secret; the old one works for --grace seconds"
    )
    rotate.add_argument("client_id")
    rotate.add_argument(
        "--grace",
        type=int,
        default=DEFAULT_GRACE,
        help=f"seconds the previous secret is still taken (default {DEFAULT_GRACE}; 0: none)",
    )
    _database_arg(rotate)

    users = sub.add_parser("users", help="manage the people who sign in")
    usub = users.add_subparsers(dest="users_command", required=True)
    ucreate = usub.add_parser("create", help="create a user; prints a generated password once")
    ucreate.add_argument("username")
    ucreate.add_argument("--practitioner", required=True, help="Practitioner/<id>")
    ucreate.add_argument(
        "--team", action="append", default=[], dest="teams", help="Group/<id>; repeat for more"
    )
    ucreate.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    _database_arg(ucreate)
    ulist = usub.add_parser("list", help="print every user as a JSON line")
    _database_arg(ulist)
    disable = usub.add_parser("disable", help="disable a user: no sign-in, tokens refused")
    disable.add_argument("username")
    _database_arg(disable)
    password = usub.add_parser("set-password", help="set a user's password")
    password.add_argument("username")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    _database_arg(password)

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
    trail.add_argument("--user", default=None, help="only this person's requests (a username)")
    trail.add_argument("--since", default=None, help="only requests at or after this date")
    trail.add_argument(
        "--format",
        choices=["text", "fhir"],
        default="text",
        help="text: one tab-separated line each; fhir: NDJSON of FHIR AuditEvents",
    )
    _database_arg(trail)

    save = sub.add_parser(
        "backup", help="copy an SQLite database to a new file while servers keep writing"
    )
    save.add_argument("destination")
    _database_arg(save)
    back = sub.add_parser(
        "restore", help="copy a backup over an SQLite database (stop its servers first)"
    )
    back.add_argument("backup")
    back.add_argument("--force", action="store_true", help="replace a database that exists already")
    _database_arg(back)

    demo = sub.add_parser("demo-data", help="write N realistic synthetic Tasks as NDJSON")
    demo.add_argument("count", type=int)
    demo.add_argument("--seed", type=int, default=1)
    return parser


def _fail(message: str, status: int = 2) -> int:
    if sys.stderr is not None:
        print(f"caretask: {message}", file=sys.stderr)
    return status


def _shown(text: str) -> str:
    """Text from argv or a file name as it can be printed: undecodable bytes as \\xff."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def _describe(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename is None:
            return error.strerror
        return f"{_shown(os.fsdecode(error.filename))}: {error.strerror}"
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.orig is not None:
        error = error.orig  # the driver's error, without the SQL and the link
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _where(url: DatabaseURL) -> str:
    """The database for messages: the SQLite path, or PostgreSQL's host and name (never the
    user or password)."""
    if url.is_sqlite:
        return _shown(url.sqlite_path)
    parts = urlsplit(url.raw)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _check_arguments(args: argparse.Namespace) -> None:
    for name, value in vars(args).items():
        if name == "file" or not isinstance(value, str):
            continue  # a file name may be any bytes; a value that is stored or sent may not
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            if name in ("name", "client_id", "username"):
                flag = name
            else:
                flag = _FLAGS.get(name) or "--" + name.replace("_", "-")
            raise CLIError(f"{flag}: '{_shown(value)}' is not valid UTF-8", 2) from None
    for name, lowest, highest in NUMBERS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if value < lowest or (highest is not None and value > highest):
            bounds = f"from {lowest} to {highest}" if highest is not None else f">= {lowest}"
            raise CLIError(f"{name}: {value} is out of range ({bounds})", 2)
    if getattr(args, "log_level", "info") not in LOG_LEVELS:
        raise CLIError(f"--log-level: choose from {', '.join(LOG_LEVELS)}", 2)
    command = (
        getattr(args, "clients_command", None)
        or getattr(args, "users_command", None)
        or args.command
    )
    if command in WRITES_STDOUT and sys.stdout is None:
        raise CLIError("standard output is closed")
    if args.command == "import" and args.file == "-" and sys.stdin is None:
        raise CLIError("standard input is closed")


def _check_listening(host: str, port: int) -> None:
    """uvicorn finds a busy port or an unknown host only after start-up, with a traceback in
    every worker: try the address here first (as uvicorn binds: SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as error:
        raise CLIError(f"cannot listen on {_shown(host)}:{port}: {_describe(error)}") from None


def _silence_stdout() -> None:
    """Send what is left for stdout nowhere, so that exiting does not fail on it again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


async def _create_client(
    url: DatabaseURL, name: str, scope: str, redirect_uris: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """A confidential client (its secret), or with `redirect_uris` a public one."""
    storage = open_storage(url)
    try:
        client_id = secrets.new_client_id()
        if redirect_uris is not None:
            await storage.create_client(
                ClientRecord(client_id, name, "", scope, False, True, redirect_uris)
            )
            return {"client_id": client_id, "scope": scope, "redirect_uris": list(redirect_uris)}
        secret = secrets.new_secret()
        record = ClientRecord(client_id, name, secrets.hash_secret(secret), scope, revoked=False)
        await storage.create_client(record)
        return {"client_id": client_id, "client_secret": secret, "scope": scope}
    finally:
        await storage.close()


def _redirect_problem(uri: str) -> str | None:
    """A redirect URI must be absolute, without a fragment (RFC 6749 3.1.2); plain http
    only to this machine (a native app's loopback, or development)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment or "#" in uri:
        return f"--redirect-uri: '{_shown(uri)}' is not an absolute http(s) URL without a fragment"
    if redirect_origin(uri) is None:
        return f"--redirect-uri: '{_shown(uri)}' has no plain host[:port]"
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        return f"--redirect-uri: '{_shown(uri)}': plain http only to localhost; use https"
    return None


def _clients_create(args: argparse.Namespace, url: DatabaseURL) -> int:
    public = args.public
    scope = " ".join((args.scope or (PUBLIC_SCOPE if public else DEFAULT_SCOPE)).split())
    bad = scopes.invalid_scopes(scope, scopes.USER if public else scopes.SYSTEM)
    if bad or not scope:
        return _fail(f"invalid scope: {' '.join(bad) or '(empty)'}")
    if public and not args.redirect_uris:
        return _fail("a --public client needs at least one --redirect-uri")
    if args.redirect_uris and not public:
        return _fail("--redirect-uri is for --public clients (people sign in to them)")
    for uri in args.redirect_uris:
        problem = _redirect_problem(uri)
        if problem:
            return _fail(problem)
    uris = tuple(dict.fromkeys(args.redirect_uris)) if public else None
    out = asyncio.run(_create_client(url, args.name, scope, uris))
    try:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()
    except OSError as error:  # the secret is shown once: not printed is lost
        raise CLIError(
            f"cannot print the new client's secret ({_describe(error)}): "
            f"revoke {out['client_id']} and create another"
        ) from None
    return 0


def _client_json(record: ClientRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client_id": record.client_id,
        "name": record.name,
        "scope": record.scope,
        "public": record.public,
        "revoked": record.revoked,
        "created": _iso(record.created_at),
    }
    if record.public:
        out["redirect_uris"] = list(record.redirect_uris)
    if record.previous_secret_until is not None and record.previous_secret_hash:
        out["previous_secret_until"] = _iso(record.previous_secret_until)
    return out


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _clients_rotate(args: argparse.Namespace, url: DatabaseURL) -> int:
    if not 0 <= args.grace <= MAX_GRACE:
        return _fail(f"--grace must be from 0 to {MAX_GRACE} seconds")
    secret = secrets.new_secret()
    until = int(time.time()) + args.grace
    hashed = secrets.hash_secret(secret)
    rotated = asyncio.run(
        _with_storage(url, lambda s: s.rotate_client_secret(args.client_id, hashed, until))
    )
    if not rotated:
        return _fail(f"no active confidential client {args.client_id}", 1)
    out = {
        "client_id": args.client_id,
        "client_secret": secret,
        "previous_secret_until": _iso(until),
    }
    _print_json(out, "the new secret")  # shown once: only its hash is stored
    return 0


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password from standard input (its first line), or a generated one (and True)."""
    if not from_stdin:
        return secrets.new_secret(), True
    if sys.stdin is None:
        raise CLIError("standard input is closed")
    text = sys.stdin.readline().rstrip("\r\n")
    if len(text) < MIN_PASSWORD:
        raise CLIError(f"the password must have at least {MIN_PASSWORD} characters", 2)
    if len(text) > 1000:
        raise CLIError("the password must have at most 1000 characters", 2)
    return text, False


def _user_json(record: UserRecord) -> dict[str, Any]:
    return {
        "username": record.username,
        "fhirUser": record.fhir_user,
        "teams": list(record.teams),
        "disabled": record.disabled,
    }


def _print_json(out: dict[str, Any], what: str) -> None:
    try:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()
    except OSError as error:
        raise CLIError(f"cannot print {what} ({_describe(error)}): set another") from None


async def _with_storage(url: DatabaseURL, work: Callable[[Storage], Awaitable[T]]) -> T:
    storage = open_storage(url)
    try:
        return await work(storage)
    finally:
        await storage.close()


def _users(args: argparse.Namespace, url: DatabaseURL) -> int:
    command = args.users_command
    if command == "list":
        for record in asyncio.run(_with_storage(url, lambda s: s.list_users())):
            sys.stdout.write(orjson.dumps(_user_json(record)).decode() + "\n")
        return 0
    problem = username_problem(args.username)
    if problem:
        return _fail(problem)
    if command == "disable":
        if not asyncio.run(_with_storage(url, lambda s: s.disable_user(args.username))):
            return _fail(f"no enabled user {args.username}", 1)
        print(f"disabled {args.username}", file=sys.stderr)
        return 0
    if command == "create":
        problem = reference_problem(args.practitioner, "Practitioner")
        for team in args.teams:
            problem = problem or reference_problem(team, "Group")
        if problem:
            return _fail(f"{problem}")
    password, generated = _password(args.password_stdin)
    hashed = secrets.hash_secret(password)
    if command == "set-password":
        if not asyncio.run(_with_storage(url, lambda s: s.set_password(args.username, hashed))):
            return _fail(f"no user {args.username}", 1)
        if generated:
            _print_json({"username": args.username, "password": password}, "the password")
        print(f"set the password of {args.username}", file=sys.stderr)
        return 0
    teams = tuple(dict.fromkeys(args.teams))
    record = UserRecord(args.username, args.practitioner, teams, hashed, disabled=False)
    if not asyncio.run(_with_storage(url, lambda s: s.create_user(record))):
        return _fail(f"a user {args.username} exists already", 1)
    out = _user_json(record)
    if generated:
        out["password"] = password  # shown once: only its hash is stored
    _print_json(out, "the new user's password")
    return 0


async def _revoke_client(url: DatabaseURL, client_id: str) -> bool:
    storage = open_storage(url)
    try:
        return await storage.revoke_client(client_id)
    finally:
        await storage.close()


def _log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging, plus caretask's own loggers on the same handler, in the
    format asked (caretask.logs)."""
    from uvicorn.config import LOGGING_CONFIG

    from caretask.logs import access_formatter_config, formatter_config

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["caretask"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["formatters"]["access_lines"] = access_formatter_config(log_format)
    config["handlers"]["access_batched"] = {
        **config["handlers"]["default"],
        "class": "caretask.logs.LoopBatchedHandler",
        "formatter": "access_lines",
    }
    config["loggers"]["caretask.access"] = {
        "handlers": ["access_batched"],
        "level": "INFO",
        "propagate": False,
    }
    formatter = formatter_config(log_format)
    if formatter is not None:
        config["formatters"] = {name: formatter for name in config["formatters"]}
    return config


def _serve(args: argparse.Namespace, url: DatabaseURL) -> int:
    from caretask.http.app import create_app
    from caretask.metrics import MULTIPROCESS_DIR

    # the environment's settings, the command line's on top
    given = _given_settings(args)
    settings = dataclasses.replace(Settings.from_env(), database_url=url.raw, **given)
    accepted = settings.accepted_hosts(args.host)  # the bound host is known only here
    settings = dataclasses.replace(
        settings, allowed_hosts=tuple(sorted(accepted)) if accepted is not None else ("*",)
    )
    schema.check_writable(url)  # here, in one process, not in every worker at start-up
    _check_listening(args.host, args.port)
    app: Starlette | str
    shared_metrics = None
    if args.workers == 1:
        app = create_app(settings)
    else:
        # uvicorn's workers are processes that import the app by name: the environment
        # carries the settings to them, written and read by config's declarations
        os.environ.update(settings.to_env())
        app = "caretask.http.app:app_from_env"
        if settings.metrics != METRICS_OFF and not os.environ.get(MULTIPROCESS_DIR):
            # set before the workers start (and import prometheus-client): each writes its
            # metrics there, and a scrape answered by any one sums them all
            shared_metrics = tempfile.mkdtemp(prefix="caretask-metrics-")
            os.environ[MULTIPROCESS_DIR] = shared_metrics
    try:
        _run_uvicorn(app, args, settings)
    finally:
        if shared_metrics is not None:
            shutil.rmtree(shared_metrics, ignore_errors=True)
    return 0


def _run_uvicorn(app: Starlette | str, args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from caretask.http.responses import EVERY_RESPONSE
    from caretask.http.timeouts import edge_protocol

    uvicorn.run(
        app,
        factory=isinstance(app, str),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=_log_config(settings.log_format),
        access_log=False,  # uvicorn's access log prints query strings, which carry PHI
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
        h11_max_incomplete_event_size=64 * 1024,
        # httptools with header timeouts and head limits (caretask.http.timeouts)
        http=edge_protocol(settings),
        headers=list(EVERY_RESPONSE),
        timeout_keep_alive=settings.keepalive_timeout,
    )


def _backup_or_restore(args: argparse.Namespace, url: DatabaseURL) -> int:
    """SQLite's backup API, one JSON line of what was copied on stdout; PostgreSQL has its
    own tools (README: Backups)."""
    from caretask.storage.sqlite.backup import BackupError, backup, restore

    if not url.is_sqlite:
        return _fail(
            f"{args.command} copies SQLite databases; back up PostgreSQL with pg_dump or a "
            "base backup (README: Backups)"
        )
    try:
        if args.command == "backup":
            copied = backup(url.sqlite_path, args.destination)
        else:
            if os.path.exists(url.sqlite_path) and not args.force:
                return _fail(
                    f"{url.sqlite_path} exists: stop its servers and add --force to replace it",
                    1,
                )
            url.prepare()
            copied = restore(args.backup, url.sqlite_path)
            schema.migrate(url)  # a backup of an older caretask is brought up to date
    except BackupError as error:
        return _fail(str(error), 1)
    out = {
        "path": copied.path,
        "bytes": copied.bytes,
        "tasks": copied.tasks,
        "seconds": round(copied.seconds, 3),
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


def _demo_data(count: int, seed: int) -> int:
    from caretask.bulk.demo import generate
    from caretask.domain.profiles import statuses

    # the statuses the profile's import takes (CARETASK_PROFILE)
    codes = statuses(Settings.from_env().profile)
    out = sys.stdout.buffer
    for task in generate(count, seed=seed, statuses=codes):
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
            profile=settings.profile,
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
    count = export_ndjson(url, sys.stdout.buffer, since)
    sys.stdout.buffer.flush()
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


def _audit(args: argparse.Namespace, url: DatabaseURL) -> int:
    from caretask.domain import audit
    from caretask.storage.bulk import BulkStore

    try:
        since = _since(args.since)
    except ValueError as error:
        return _fail(str(error))
    storage = BulkStore(url, read_only=True)
    out = sys.stdout
    count, after = 0, 0
    try:
        while batches := storage.audit_batches(args.client, since, after, 100):
            for record in audit.select(batches, args.client, since, args.user):
                if args.format == "fhir":
                    out.write(orjson.dumps(audit.audit_event(record)).decode() + "\n")
                else:
                    out.write(audit.text_line(record) + "\n")
                count += 1
            after = batches[-1][0]
        out.flush()
    finally:
        storage.close()
    print(f"{count} audit records", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()
        return status
    except CLIError as error:
        status, message = error.status, str(error)
    except (BadDatabaseURL, BadSetting) as error:
        status, message = 2, str(error)
    except (SchemaTooNew, SchemaNotCurrent) as error:
        status, message = 1, str(error)
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        status, message = 130, "interrupted"
    except Exception as error:  # the promise of this module: one line, never a traceback
        status, message = 1, _describe(error)
    _silence_stdout()  # output cut short is not flushed at exit (a second error)
    return _fail(message, status)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    _check_arguments(args)
    if args.command == "demo-data":
        return _demo_data(args.count, args.seed)
    url = DatabaseURL.parse(args.database_url or env_value("database_url"))
    try:
        return _run(args, url)
    except DATABASE_ERRORS as error:
        raise CLIError(f"database {_where(url)}: {_describe(error)}") from None
    except BrokenPipeError:
        raise
    except OSError as error:  # the SQLite file, its folder, its lock file
        raise CLIError(_describe(error)) from None


def _run(args: argparse.Namespace, url: DatabaseURL) -> int:
    if args.command in ("backup", "restore"):
        return _backup_or_restore(args, url)
    # export and audit only read: they open the database read-only, unmigrated
    if args.command == "export":
        return _export(args, url)
    if args.command == "audit":
        return _audit(args, url)
    schema.migrate(url)
    if args.command == "migrate":
        print(f"database schema at revision {schema.head_revision()}", file=sys.stderr)
        return 0
    if args.command == "serve":
        return _serve(args, url)
    if args.command == "import":
        schema.check_writable(url)  # "read-only" rather than a disk I/O error mid-import
        return _import(args, url)
    if args.command == "users":
        return _users(args, url)
    if args.clients_command == "create":
        return _clients_create(args, url)
    if args.clients_command == "list":
        for record in asyncio.run(_with_storage(url, lambda s: s.list_clients())):
            sys.stdout.write(orjson.dumps(_client_json(record)).decode() + "\n")
        return 0
    if args.clients_command == "rotate":
        return _clients_rotate(args, url)
    if not asyncio.run(_revoke_client(url, args.client_id)):
        return _fail(f"no active client {args.client_id}")
    print(f"revoked {args.client_id}", file=sys.stderr)
    return 0
