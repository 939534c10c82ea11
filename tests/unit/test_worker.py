"""Worker names: `module.qualname`, stable across processes, and rejected where they cannot be."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from relay_actors import InvalidWorkerError, Job, Worker
from relay_actors.worker import lookup_worker
from tests.workers import Echo, Outer


def test_name_is_module_and_qualname() -> None:
    assert Echo.name == "tests.workers.Echo"


def test_nested_class_uses_qualname() -> None:
    assert Outer.Inner.name == "tests.workers.Outer.Inner"


def test_job_carries_worker_name() -> None:
    assert Echo.new({"value": 1}).worker == "tests.workers.Echo"


def test_registry_finds_worker() -> None:
    assert lookup_worker("tests.workers.Echo") is Echo


def test_registry_misses_unknown_name() -> None:
    assert lookup_worker("tests.workers.Missing") is None


def test_class_in_function_rejected() -> None:
    with pytest.raises(InvalidWorkerError, match="inside a function"):

        class Local(Worker[None]):
            def perform(self, job: Job) -> None:
                return None


def test_invalid_option_rejected() -> None:
    with pytest.raises(InvalidWorkerError, match="invalid options"):

        class BadQueue(Worker[None], queue="no spaces allowed"):
            pass


def test_invalid_worker_error_is_type_error() -> None:
    assert issubclass(InvalidWorkerError, TypeError)


SCRIPT = """
    from relay_actors import Worker

    class Scripted(Worker):
        def perform(self, job):
            return None

    print(Scripted.name)
"""


def test_main_script_gets_module_name(tmp_path: Path) -> None:
    script = tmp_path / "scripted_jobs.py"
    script.write_text(textwrap.dedent(SCRIPT))
    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "scripted_jobs.Scripted"


def test_module_run_gets_module_name(tmp_path: Path) -> None:
    package = tmp_path / "jobs_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(textwrap.dedent(SCRIPT))
    completed = subprocess.run(
        [sys.executable, "-m", "jobs_pkg.tasks"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "jobs_pkg.tasks.Scripted"


def test_interactive_worker_rejected() -> None:
    code = "from relay_actors import Worker\nclass Typed(Worker):\n    pass\n"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert completed.returncode != 0
    assert "InvalidWorkerError" in completed.stderr
