"""Hypothesis profiles: $HYPOTHESIS_PROFILE picks `dev` (the default, quick) or `ci` (thorough)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=50)
# Shared CI machines stall now and then, so the ci profile has no per-example deadline.
settings.register_profile("ci", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
