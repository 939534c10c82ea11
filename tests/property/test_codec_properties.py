"""Properties of the codec: every supported value round trips, and no input crashes decode."""

from __future__ import annotations

import datetime as dt

import zstandard
from hypothesis import given
from hypothesis import strategies as st

from relay_actors import codec
from relay_actors.codec import DecodeError, decode, encode
from tests.assertions import assert_same
from tests.values import Color, Point

# Fixed UTC offsets, the only time zones whose datetimes and times decode unchanged.
offsets = st.none() | st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)).map(
        lambda offset: dt.timedelta(minutes=offset // dt.timedelta(minutes=1))
    ),
)
# Values that equal themselves, so they can be set items and dict keys.
hashable_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.dates()
    | st.datetimes(timezones=offsets)
    | st.times(timezones=offsets)
    | st.timedeltas()
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.sampled_from(Color)
)
hashables = st.recursive(
    hashable_scalars,
    lambda children: (
        st.lists(children, max_size=3).map(tuple) | st.frozensets(children, max_size=3)
    ),
    max_leaves=8,
)
scalars = (
    hashable_scalars
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.integers(min_value=-(2**5000), max_value=2**5000)
    | st.floats()
    | st.decimals(allow_nan=True)
    | st.builds(Point, st.integers(), st.integers(), st.text())
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(hashables, children, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
        # Dataclass fields hold NaN-free values, since dataclass equality has no NaN rule.
        | st.builds(Point, hashables, hashables, st.text())
    ),
    max_leaves=30,
)


@given(values)
def test_codec_round_trips(value: object) -> None:
    assert_same(value, decode(encode(value)))


@given(st.datetimes(timezones=st.timezones()))
def test_zoned_datetime_keeps_instant(value: dt.datetime) -> None:
    # A ZoneInfo datetime decodes with a fixed-offset timezone. Python never
    # calls a datetime in a DST gap or fold equal to one in another zone
    # (PEP 495), so this compares the wall time, the offset and the instant.
    decoded = decode(encode(value))

    assert type(decoded) is dt.datetime
    assert decoded.replace(tzinfo=None) == value.replace(tzinfo=None)
    assert decoded.utcoffset() == value.utcoffset()
    assert decoded.timestamp() == value.timestamp()


def _framed(raw: bytes) -> bytes:
    return bytes([codec.VERSION]) + zstandard.ZstdCompressor().compress(raw)


# Arbitrary bytes rarely get past the version byte and the zstandard header,
# so most strategies wrap arbitrary bytes in a valid version and frame to
# reach the tagged-data reader. Small byte values are tags and short lengths.
arbitrary_input = (
    st.binary(max_size=200)
    | st.binary(max_size=200).map(lambda raw: bytes([codec.VERSION]) + raw)
    | st.binary(max_size=200).map(_framed)
    | st.lists(st.integers(min_value=0, max_value=20), max_size=60).map(bytes).map(_framed)
    | values.map(encode).flatmap(
        lambda data: st.integers(min_value=0, max_value=len(data)).map(lambda cut: data[:cut])
    )
)


@given(arbitrary_input)
def test_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass
