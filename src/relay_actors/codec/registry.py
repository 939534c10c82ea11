"""Classes registered with a stable tag, so results may carry them.

A registered class must be registered under the same tag on the executing and
the awaiting side. Decoding builds only classes registered in this process.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import threading
from typing import Any

TAG_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")

_lock = threading.Lock()
_by_tag: dict[str, type] = {}
_by_class: dict[type, str] = {}


def register(cls: type, *, tag: str) -> type:
    """Register a dataclass or an enum under `tag`, and return the class.

    Raises:
        TypeError: `cls` is neither a dataclass nor an Enum subclass.
        ValueError: `tag` is invalid, or already taken by another class.
    """
    if not isinstance(cls, type) or not (
        dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
    ):
        raise TypeError(f"register() takes a dataclass or an Enum subclass, got {cls!r}")
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise ValueError(
            f"invalid tag {tag!r}: use 1 to 64 letters, digits and _ . : -, "
            "starting with a letter or underscore"
        )
    with _lock:
        taken = _by_tag.get(tag)
        if taken is not None and taken is not cls and _qualified(taken) != _qualified(cls):
            raise ValueError(f"tag {tag!r} is already registered for {_qualified(taken)}")
        previous_tag = _by_class.get(cls)
        if previous_tag is not None and previous_tag != tag:
            raise ValueError(f"{_qualified(cls)} is already registered as {previous_tag!r}")
        _by_tag[tag] = cls
        _by_class[cls] = tag
    return cls


def unregister(tag: str) -> None:
    """Remove the class registered under `tag`, if any."""
    with _lock:
        cls = _by_tag.pop(tag, None)
        if cls is not None:
            _by_class.pop(cls, None)


def tag_of(cls: type) -> str | None:
    with _lock:
        return _by_class.get(cls)


def class_of(tag: str) -> type | None:
    with _lock:
        return _by_tag.get(tag)


def fields_of(value: Any) -> dict[str, Any]:
    """Return the init fields of a registered dataclass instance by name."""
    return {
        field.name: getattr(value, field.name) for field in dataclasses.fields(value) if field.init
    }


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
