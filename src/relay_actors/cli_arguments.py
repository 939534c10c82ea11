"""The argument parser of the `relay-actors` command line, and its option types."""

from __future__ import annotations

import argparse

from relay_actors.options import DEFAULT_POLL_INTERVAL, DEFAULT_SHUTDOWN_GRACE

DESCRIPTION = "The `relay-actors` command line: worker, migrate, status and demo."


def queue_option(text: str) -> tuple[str, int]:
    name, separator, count = text.partition("=")
    if not separator:
        return name, 10
    try:
        return name, int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid queue {text!r}: write NAME or NAME=EXECUTORS, for example math=10"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `relay-actors` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS,
        help="level of the log lines written to stderr (default INFO for worker, WARNING for "
        "the others)",
    )
    # The options of every command that connects to a schema's tables.
    database_options = argparse.ArgumentParser(add_help=False)
    database_options.add_argument(
        "--dsn", help="PostgreSQL DSN (default $RELAY_ACTORS_DSN, then $DATABASE_URL)"
    )
    database_options.add_argument(
        "--prefix", default="public", help="schema of the tables (default public)"
    )

    parser = argparse.ArgumentParser(prog="relay-actors", description=DESCRIPTION, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser(
        "worker",
        parents=[common, database_options],
        description="Run a node that executes jobs until SIGTERM or SIGINT, then stop "
        "gracefully. Modules are imported with the current directory on sys.path.",
        help="run a node that executes jobs until SIGTERM or SIGINT; "
        "$RELAY_ACTORS_SECRET, if set, signs relay results",
    )
    worker.add_argument(
        "--queue",
        action="append",
        type=queue_option,
        default=[],
        metavar="NAME[=EXECUTORS]",
        help="run this queue with this many executors (default 10); repeat for more queues",
    )
    worker.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module to register its workers; repeat for more modules",
    )
    worker.add_argument("--node", help="readable node name (default the host name)")
    worker.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help=f"seconds between polls for jobs (default {DEFAULT_POLL_INTERVAL})",
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=float,
        default=5.0,
        help="seconds between the node's heartbeats (default 5)",
    )
    worker.add_argument(
        "--rescue-after",
        type=float,
        default=60.0,
        help="seconds without a heartbeat after which a node's jobs are rescued (default 60)",
    )
    worker.add_argument(
        "--relaxed-claims",
        action="store_true",
        help="commit claims without waiting for the WAL flush (a job may run twice "
        "after a PostgreSQL crash)",
    )
    worker.add_argument(
        "--relaxed-outcomes",
        action="store_true",
        help="commit claims and recorded outcomes without waiting for the WAL flush "
        "(a job whose caller got its result may run again after a PostgreSQL crash); "
        "not with --pgbouncer",
    )
    worker.add_argument(
        "--pgbouncer",
        action="store_true",
        help="connect through PgBouncer in transaction pooling mode: no prepared statements "
        "or session settings; needs --listen-dsn",
    )
    worker.add_argument(
        "--listen-dsn",
        help="PostgreSQL DSN of the listener's direct connection, which LISTEN needs "
        "(default the --dsn)",
    )
    worker.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_SHUTDOWN_GRACE,
        help=f"seconds running jobs get to finish at shutdown (default {DEFAULT_SHUTDOWN_GRACE})",
    )

    commands.add_parser(
        "migrate",
        parents=[common, database_options],
        description="Create or upgrade the tables in a schema, then exit.",
        help="create or upgrade the tables in a schema, then exit",
    )

    status_command = commands.add_parser(
        "status",
        parents=[common, database_options],
        description="Print job counts per queue and state, and every node with its queues, "
        "last heartbeat, executors in use and pending relays.",
        help="show job counts per queue and state, and the nodes of a schema",
    )
    status_command.add_argument(
        "--json", action="store_true", help="print the status as JSON instead of tables"
    )

    demo = commands.add_parser(
        "demo",
        parents=[common],
        description="Start a worker node in another process and check the results of one "
        "job per source file of the standard library, then one job per error result.",
        help="run jobs over the standard library's source files on a worker node",
    )
    demo.add_argument(
        "--jobs", type=int, default=None, help="cap on the number of files (default all)"
    )
    demo.add_argument(
        "--dsn",
        help="PostgreSQL DSN (default $RELAY_ACTORS_DSN, else an embedded server it starts)",
    )
    demo.add_argument("--threads", type=int, default=4, help="caller threads (default 4)")
    demo.add_argument(
        "--executors", type=int, default=8, help="executors on the worker node (default 8)"
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser
