"""Node ids, schema prefixes and the LISTEN channel names derived from them."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket

from relay_actors.errors import ConfigurationError

PREFIX_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,47}")
NODE_NAME_MAX_LENGTH = 48
CHANNEL_DIGEST_BYTES = 12


def validate_prefix(prefix: object) -> str:
    """Return `prefix` if it is a valid schema name, else raise ConfigurationError."""
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigurationError(
            f"invalid prefix {prefix!r}: use 1 to 48 lowercase letters, digits and underscores, "
            "starting with a letter or underscore (it names a PostgreSQL schema)"
        )
    if prefix.startswith("pg_"):
        raise ConfigurationError(f"invalid prefix {prefix!r}: names starting with pg_ are reserved")
    return prefix


def default_node_name() -> str:
    return socket.gethostname() or "node"


def make_node_id(node_name: str) -> str:
    """Return a node id unique to this process: the node name and a random suffix."""
    if not isinstance(node_name, str) or not node_name.strip():
        raise ConfigurationError(f"invalid node name {node_name!r}: give a non-empty string")
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", node_name.strip())[:NODE_NAME_MAX_LENGTH]
    return f"{readable}-{secrets.token_hex(4)}"


def _digest(*parts: str) -> str:
    joined = "\x00".join(parts).encode()
    return hashlib.blake2b(joined, digest_size=CHANNEL_DIGEST_BYTES).hexdigest()


def relay_channel(prefix: str, node_id: str) -> str:
    """Return the channel on which `node_id` receives relay results (37 bytes)."""
    return f"relay_actors_r_{_digest(prefix, node_id)}"


def control_channel(prefix: str) -> str:
    """Return the channel on which every node of `prefix` hears of cancelled jobs."""
    return f"relay_actors_c_{_digest(prefix, 'control')}"


def insert_channel(prefix: str) -> str:
    """Return the channel on which every node of `prefix` hears of inserted jobs."""
    return f"relay_actors_i_{_digest(prefix)}"
