"""Result classes registered with the codec, for tests and worker nodes alike."""

from __future__ import annotations

import dataclasses
import enum

from relay_actors import codec

POINT_TAG = "tests.Point"
COLOR_TAG = "tests.Color"


@dataclasses.dataclass(frozen=True)
class Point:
    """A registered dataclass result."""

    x: int
    y: int
    label: str = ""


class Color(enum.Enum):
    """A registered enum result."""

    RED = "red"
    GREEN = "green"


codec.register(Point, tag=POINT_TAG)
codec.register(Color, tag=COLOR_TAG)


@dataclasses.dataclass(frozen=True)
class Unregistered:
    """A dataclass that no test registers, so the codec rejects it."""

    value: int
