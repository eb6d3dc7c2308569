"""Frames: what a child sends is split exactly, and anything malformed is refused, never guessed at."""

from __future__ import annotations

import struct

import pytest

from services.py_sandbox import frames

KINDS = frames.CHILD_KINDS


def test_round_trip_of_several_frames() -> None:
    data = frames.encode(frames.RESULT_JSON, b'{"a": 1}') + frames.encode(frames.DONE, b"")
    assert frames.decode_all(data, KINDS, 1024) == [(frames.RESULT_JSON, b'{"a": 1}'), (frames.DONE, b"")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Z" + struct.pack(">I", 0), "unknown frame kind"),
        (b"J" + struct.pack(">I", 2**31), "exceeds"),
        (b"J" + struct.pack(">I", 10) + b"short", "cut short"),
        (b"J\x00", "header is cut short"),
    ],
)
def test_malformed_data_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(frames.FrameError, match=message):
        frames.decode_all(data, KINDS, 1 << 20)


def test_the_incremental_reader_waits_for_whole_frames() -> None:
    reader = frames.FrameReader(frozenset({frames.CONTROL_JSON, frames.CONTROL_BLOB}), 1 << 20)
    data = frames.encode(frames.CONTROL_JSON, b"{}") + frames.encode(frames.CONTROL_BLOB, b"x" * 100)
    assert reader.feed(data[:7]) == [(frames.CONTROL_JSON, b"{}")]
    assert reader.feed(data[7:50]) == []
    assert reader.feed(data[50:]) == [(frames.CONTROL_BLOB, b"x" * 100)]


def test_the_incremental_reader_refuses_an_oversized_frame_before_buffering_it() -> None:
    reader = frames.FrameReader(frozenset({frames.CONTROL_JSON}), 1024)
    with pytest.raises(frames.FrameError):
        reader.feed(frames.HEADER.pack(frames.CONTROL_JSON, 10**9))
