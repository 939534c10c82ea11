"""Result types in user code: mypy in strict mode over tests/typing/example_usage.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "tests" / "typing" / "example_usage.py"


# A first mypy run without a cache reads the package and its dependencies,
# which can take longer than the suite's 60 s default on a loaded machine.
@pytest.mark.timeout(300)
def test_example_usage_type_checks() -> None:
    stdout, stderr, status = api.run(
        ["--config-file", str(REPO_ROOT / "pyproject.toml"), "--no-error-summary", str(EXAMPLE)]
    )
    assert status == 0, f"mypy exited with {status}:\n{stdout}{stderr}"
