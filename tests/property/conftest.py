"""Hypothesis profiles: $HYPOTHESIS_PROFILE picks `dev` (the default, quick) or `ci` (thorough).

Properties that run jobs on PostgreSQL take 0.05 to 1 s per example, so they
use the `database` profile: fewer examples than the codec properties, no
deadline, and function-scoped fixtures (one instance serves every example).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
DATABASE_EXAMPLES = {"dev": 10, "ci": 50}

settings.register_profile("dev", max_examples=50)
# Shared CI machines stall now and then, so the ci profile has no per-example deadline.
settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(PROFILE)

settings.register_profile(
    "database",
    max_examples=DATABASE_EXAMPLES.get(PROFILE, DATABASE_EXAMPLES["dev"]),
    deadline=None,
    print_blob=PROFILE == "ci",
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
