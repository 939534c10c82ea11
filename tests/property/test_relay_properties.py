"""Properties of relays run through real jobs on PostgreSQL: order, size limits and deadlines.

Each test starts its instances once and reuses them for every generated
example, so the examples share one schema.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from relay_actors import Error, Instance, JobError, Ok, Reason, Relay, codec
from tests.assertions import assert_same
from tests.property.test_codec_properties import values
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Decoded, Scripted, Sleep, blob

DATABASE = settings.get_profile("database")
RESULT_TIMEOUT = 10.0
# await_many must return this soon after its deadline. The bound is wide, so
# it also absorbs CPU contention from other test processes on a 2-core machine.
DEADLINE_TOLERANCE_SECONDS = 0.5

# Text that jsonb stores unchanged: no NUL character and no surrogate code
# point (category Cs), which job validation rejects.
json_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | json_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(json_text, children, max_size=3)
    ),
    max_leaves=6,
)
kinds = st.sampled_from(
    ["value", "raise", "snooze", "discard", "cancel", "too_large", "cancelled_before_run"]
)
job_specs = st.lists(
    st.tuples(kinds, st.integers(min_value=0, max_value=50), json_values),
    min_size=1,
    max_size=12,
)


def scripted_job(position: int, kind: str, ms: int, payload: Any) -> Any:
    """Return the job for one spec; its value carries its position, so a swap shows."""
    args = {"kind": "value" if kind == "cancelled_before_run" else kind, "ms": ms}
    args["value"] = expected_value(position, kind, payload)
    if kind == "cancelled_before_run":
        return Scripted.new(args, scheduled_in=3600)
    return Scripted.new(args)


def expected_value(position: int, kind: str, payload: Any) -> Any:
    """Return the job's value, or its error message (text, since jsonb reorders object keys)."""
    if kind == "raise":
        return f"job {position}: {payload!r}"
    return [position, payload]


def check_result(position: int, kind: str, payload: Any, result: Any) -> None:
    """Assert that `result` is what a Scripted job of `kind` produces."""
    value = expected_value(position, kind, payload)
    if kind == "value":
        assert result == Ok(value), f"position {position}: {result!r}"
    elif kind == "raise":
        assert isinstance(result, Error), f"position {position}: {result!r}"
        assert isinstance(result.reason, JobError), f"position {position}: {result!r}"
        assert result.reason.type == "builtins.ValueError"
        assert result.reason.message == str(value)
        assert result.reason.attempt == 1
    else:
        expected = {
            "snooze": Reason.SNOOZED,
            "discard": Reason.DISCARDED,
            "cancel": Reason.CANCELLED,
            "too_large": Reason.RESULT_TOO_LARGE,
            "cancelled_before_run": Reason.CANCELLED,
        }[kind]
        assert result == Error(expected), f"position {position}: {result!r}"


@pytest.fixture
def node(start_instance: Callable[..., Instance]) -> Instance:
    """An instance that runs the test queues; Hypothesis reuses it for every example."""
    return start_instance(queues={QUICK_QUEUE: 8, SLOW_QUEUE: 8})


def test_too_large_kind_exceeds_default_limit() -> None:
    assert len(codec.encode(blob(9_000, seed=0))) > 8_192


@pytest.mark.timeout(180)
@DATABASE
@given(specs=job_specs, batch=st.booleans())
def test_await_many_keeps_input_order(
    node: Instance, specs: list[tuple[str, int, Any]], batch: bool
) -> None:
    instance = node
    jobs = [scripted_job(i, kind, ms, payload) for i, (kind, ms, payload) in enumerate(specs)]
    if batch:
        relays = Relay.async_many(instance.name, jobs)
    else:
        relays = [Relay.async_(instance.name, job) for job in jobs]
    for relay, (kind, _, _) in zip(relays, specs, strict=True):
        if kind == "cancelled_before_run":
            assert instance.cancel_job(relay.job.id)

    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)

    assert len(results) == len(specs)
    for position, ((kind, _, payload), result) in enumerate(zip(specs, results, strict=True)):
        check_result(position, kind, payload, result)


def build_value(recipe: tuple[Any, ...]) -> Any:
    """Return the value a recipe describes; recipes keep failure reports short."""
    kind, *parts = recipe
    if kind == "random bytes":
        seed, size = parts
        return random.Random(seed).randbytes(size)
    if kind == "repeated bytes":
        return b"x" * parts[0]
    if kind == "repeated text":
        text, count = parts
        return text * count
    if kind == "repeated item":
        item, count = parts
        return [item] * count
    return parts[0]


# Items small enough that 20,000 copies stay far below the decode bound, so
# every example is quick to run, even while other work loads the machine.
small_items = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8)

# Recipes of every size class. Random bytes do not compress: 1 kB travels
# inline, 7 kB is read from the row, and 20 kB is over the default limit.
# Repeated bytes, text and items compress far below any limit.
recipes = (
    st.tuples(st.just("value"), values)
    | st.tuples(st.just("random bytes"), st.integers(0, 2**32), st.integers(0, 20_000))
    | st.tuples(st.just("repeated bytes"), st.integers(100_000, 2_000_000))
    | st.tuples(
        st.just("repeated text"), st.text(min_size=1, max_size=5), st.integers(1_000, 100_000)
    )
    | st.tuples(st.just("repeated item"), small_items, st.integers(1_000, 20_000))
)


@pytest.mark.timeout(180)
@DATABASE
@given(recipe=recipes)
def test_result_size_limit_end_to_end(
    start_instance: Callable[..., Instance], node: Instance, recipe: tuple[Any, ...]
) -> None:
    value = build_value(recipe)
    # The worker node decodes the value from its args; decoding is
    # deterministic, so this is the value it returns, set order included.
    encoded = codec.encode(value)
    returned = codec.decode(encoded)
    limit = len(codec.encode(returned))
    note(f"encoded size {limit} bytes")
    at_limit = start_instance(queues={}, plugins=[Relay.plugin(max_result_bytes=limit)])
    under_limit = start_instance(queues={}, plugins=[Relay.plugin(max_result_bytes=limit - 1)])
    try:
        args = {"encoded": base64.b64encode(encoded).decode("ascii")}
        fits = Relay.async_(at_limit.name, Decoded.new(args))
        too_large = Relay.async_(under_limit.name, Decoded.new(args))

        fits_result = Relay.await_(fits, timeout=RESULT_TIMEOUT)
        too_large_result = Relay.await_(too_large, timeout=RESULT_TIMEOUT)
    finally:
        at_limit.stop(grace=0)
        under_limit.stop(grace=0)

    assert isinstance(fits_result, Ok), fits_result
    assert_same(returned, fits_result.value)
    assert too_large_result == Error(Reason.RESULT_TOO_LARGE)


@pytest.mark.timeout(240)
@DATABASE
@given(
    deadline=st.floats(min_value=0.25, max_value=0.6),
    quick=st.lists(st.integers(min_value=0, max_value=50), max_size=4),
    slow=st.lists(st.floats(min_value=0.2, max_value=0.3), max_size=4),
    shuffle=st.randoms(use_true_random=False),
)
def test_await_many_shared_deadline(
    node: Instance,
    deadline: float,
    quick: list[int],
    slow: list[float],
    shuffle: random.Random,
) -> None:
    instance = node
    # Quick jobs end within 50 ms; slow ones sleep past the deadline by 0.2 to 0.3 s.
    plan = [("quick", ms / 1000) for ms in quick] + [("slow", deadline + extra) for extra in slow]
    shuffle.shuffle(plan)
    jobs = [
        Sleep.new({"seconds": seconds, "value": i}, queue=QUICK_QUEUE if kind == "quick" else None)
        for i, (kind, seconds) in enumerate(plan)
    ]
    relays = [Relay.async_(instance.name, job) for job in jobs]

    started = time.monotonic()
    results = Relay.await_many(relays, timeout=deadline)
    elapsed = time.monotonic() - started

    unfinished = [i for i, (kind, _) in enumerate(plan) if kind == "slow"]
    note(f"returned after {elapsed:.3f} s for a deadline of {deadline:.3f} s")
    if unfinished:
        assert elapsed >= deadline, f"returned {deadline - elapsed:.3f} s before the deadline"
    assert elapsed <= deadline + DEADLINE_TOLERANCE_SECONDS
    for i, (kind, _) in enumerate(plan):
        expected = Error(Reason.TIMEOUT) if kind == "slow" else Ok(i)
        assert results[i] == expected, f"position {i} ({kind}): {results[i]!r}"

    later = Relay.await_many([relays[i] for i in unfinished], timeout=RESULT_TIMEOUT)
    assert later == [Ok(i) for i in unfinished]
