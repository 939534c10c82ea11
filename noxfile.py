"""Checks of relay_actors, one nox session per check; CI calls them one to one."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("RELAY_ACTORS_NOX_PYTHON") or None


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against $RELAY_ACTORS_TEST_DSN, or an embedded server if unset."""
    session.install("-e", ".[binary,embedded,test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the demo; pass options after --, for example `nox -s demo -- --jobs 200`."""
    session.install("-e", ".[binary,embedded]")
    session.run("relay-actors", "demo", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style, formatting and common bugs with ruff."""
    # Pinned, because a new ruff release can format the same code differently.
    session.install("ruff==0.17.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy in strict mode."""
    session.install("-e", ".[binary,embedded]", "mypy")
    session.run("mypy")


# Named in the decorator, so no function in this file shadows the typing module.
@nox.session(python=PYTHON, name="typing")
def typing_example(session: nox.Session) -> None:
    """Check the public API's result types with mypy in strict mode over a user-style example."""
    session.install("-e", ".[binary,embedded]", "mypy")
    session.run("mypy", "tests/typing/example_usage.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the docs site into site/ with MkDocs; any warning fails the build."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
