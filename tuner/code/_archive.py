"""What both sides of a code archive agree on: its address (the SHA-256 of its bytes) and
its limits (entries, unpacked size); the client checks them before it uploads, the server
again when it receives.
"""

from __future__ import annotations

import hashlib

__all__ = ["MAX_ENTRIES", "UNPACKED_FACTOR", "mib", "sha256_of"]

#: An archive may unpack to this many times its cap (source compresses 3-5x; a zip bomb
#: compresses a thousandfold).
UNPACKED_FACTOR = 10
#: More files than this is not a code folder.
MAX_ENTRIES = 20_000


def sha256_of(data: bytes) -> str:
    """The address of an archive: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def mib(size: float) -> str:
    """A size as people read it: ``512 bytes``, ``3.5 KiB``, ``11.0 MiB``."""
    if size < 1024:
        return f"{size:.0f} bytes"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"
