"""Length-prefixed frames: how a child reports to its zygote, and how a zygote talks to the server.

A frame is one kind byte, a 4-byte big-endian length and the payload. Nothing here is ever unpickled: the
payloads are JSON, Arrow IPC, PNG or a serialized protobuf, each parsed by a reader that validates it.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">cI")

# Kinds a child sends on its result pipe.
RESULT_JSON = b"J"
RESULT_TABLE = b"T"
FIGURE_PNG = b"P"
RUN_ERROR = b"E"
ISOLATION = b"I"
DONE = b"D"
INPUT_READY = b"K"  # the caller's table is decoded: a crash before it is the input's fault
CACHE_READY = b"A"  # the session's Arrow copy is written in full (right after ISOLATION, before any code)
CHILD_KINDS = frozenset(
    {RESULT_JSON, RESULT_TABLE, FIGURE_PNG, RUN_ERROR, ISOLATION, DONE, INPUT_READY, CACHE_READY}
)

# Kinds on the control pipe between the server and a zygote.
CONTROL_JSON = b"C"
CONTROL_BLOB = b"B"


class FrameError(ValueError):
    """The bytes are not a well-formed sequence of frames."""


def encode(kind: bytes, payload: bytes) -> bytes:
    """One frame."""
    return HEADER.pack(kind, len(payload)) + payload


def decode_all(data: bytes, kinds: frozenset[bytes], max_frame: int) -> list[tuple[bytes, bytes]]:
    """Splits `data` into frames; refuses unknown kinds, frames over `max_frame` and a torn last frame."""
    frames: list[tuple[bytes, bytes]] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise FrameError("a frame header is cut short")
        kind, length = HEADER.unpack_from(view, offset)
        if kind not in kinds:
            raise FrameError(f"unknown frame kind {kind!r}")
        if length > max_frame:
            raise FrameError(f"a frame of {length:,} bytes exceeds the {max_frame:,}-byte cap")
        start = offset + HEADER.size
        if start + length > len(data):
            raise FrameError("a frame is cut short")
        frames.append((kind, bytes(view[start : start + length])))
        offset = start + length
    return frames


def leading_kinds(data: bytes, count: int) -> list[bytes]:
    """The kinds of the first `count` complete frames (what follows them may be malformed)."""
    kinds: list[bytes] = []
    offset = 0
    while len(kinds) < count and len(data) - offset >= HEADER.size:
        kind, length = HEADER.unpack_from(data, offset)
        offset += HEADER.size + length
        if offset > len(data):
            break
        kinds.append(kind)
    return kinds


class FrameReader:
    """Incremental decoder for a byte stream (the control pipe), one complete frame at a time."""

    def __init__(self, kinds: frozenset[bytes], max_frame: int) -> None:
        self.kinds = kinds
        self.max_frame = max_frame
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Adds bytes and returns the frames now complete."""
        self.buffer += data
        out: list[tuple[bytes, bytes]] = []
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer, 0)
            if kind not in self.kinds:
                raise FrameError(f"unknown frame kind {kind!r}")
            if length > self.max_frame:
                raise FrameError(f"a frame of {length:,} bytes exceeds the {self.max_frame:,}-byte cap")
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            out.append((kind, bytes(self.buffer[HEADER.size : end])))
            del self.buffer[:end]
        return out
