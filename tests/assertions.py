"""A strict comparison of decoded values: equal, and of the same types all the way down."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any


def assert_same(expected: Any, actual: Any) -> None:
    """Assert equal values of identical types all the way down.

    NaN equals NaN here, a float's sign of zero must match, a Decimal must keep
    its exponent, and an aware datetime or time must keep its UTC offset.
    """
    assert type(actual) is type(expected), f"{actual!r} is a {type(actual)}, not {type(expected)}"
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    elif isinstance(expected, float):
        assert actual == expected
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected)
    elif isinstance(expected, decimal.Decimal):
        assert str(actual) == str(expected)
    elif isinstance(expected, dt.datetime | dt.time):
        assert actual == expected
        assert actual.utcoffset() == expected.utcoffset()
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected)
        for expected_item, actual_item in zip(expected, actual, strict=True):
            assert_same(expected_item, actual_item)
    elif isinstance(expected, dict):
        assert len(actual) == len(expected)
        for (expected_key, expected_item), (actual_key, actual_item) in zip(
            expected.items(), actual.items(), strict=True
        ):
            assert_same(expected_key, actual_key)
            assert_same(expected_item, actual_item)
    else:
        assert actual == expected
