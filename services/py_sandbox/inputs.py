"""Decoding a caller's table inside the confined child: bound its decoded size, then validate it fully.

A compressed Arrow IPC stream can be a bomb (49 KB of zstd that inflates to 1.6 GB), and a malformed one
can make a reader copy memory past its buffers. So this runs only after `confine()`, and before any
buffer is decompressed it adds up the sizes each record batch *declares*: a compressed buffer starts with
its uncompressed length, an uncompressed one is its own length. Only a stream whose declared size fits is
read, every batch is validated with `validate(full=True)` (offsets, lengths, UTF-8), and only then does
pandas see it. Whatever is wrong raises `InputError`, which the run reports as INVALID_ARGUMENT.
"""

from __future__ import annotations

import struct

import pyarrow as pa

# Arrow's Message.fbs: the header union's types and the field slots used here.
HEADER_RECORD_BATCH = 3
HEADER_DICTIONARY_BATCH = 2
MESSAGE_HEADER_TYPE, MESSAGE_HEADER = 1, 2
BATCH_LENGTH, BATCH_BUFFERS, BATCH_COMPRESSION = 0, 2, 3
DICTIONARY_DATA = 1
BUFFER_STRUCT = struct.Struct("<qq")  # Buffer { offset: long; length: long }
NOT_COMPRESSED = -1
CELL_BYTES = 8  # what pandas spends on a cell of most types (a pointer for objects)


class InputError(ValueError):
    """The caller's table is malformed or too large; the message says which and how to fix it."""


class _Table:
    """One flatbuffer table, every read bounds-checked (Arrow has verified the message, we check again)."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        vtable = pos - self._i32(pos)
        self.vtable = vtable
        self.vsize = self._u16(vtable)

    def _unpack(self, fmt: str, at: int) -> int:
        size = struct.calcsize(fmt)
        if at < 0 or at + size > len(self.data):
            raise InputError("The input table's metadata points outside itself (a malformed IPC message).")
        return int(struct.unpack_from(fmt, self.data, at)[0])

    def _i32(self, at: int) -> int:
        return self._unpack("<i", at)

    def _u16(self, at: int) -> int:
        return self._unpack("<H", at)

    def _field(self, slot: int) -> int:
        """Position of field `slot`, or 0 when absent (its default)."""
        entry = 4 + 2 * slot
        return self.pos + self._u16(self.vtable + entry) if entry < self.vsize else 0

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        at = self._field(slot)
        return self._unpack(fmt, at) if at else default

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return _Table(self.data, at + self._unpack("<I", at)) if at else None

    def vector(self, slot: int) -> tuple[int, int]:
        """(position of the first element, element count)."""
        at = self._field(slot)
        if not at:
            return 0, 0
        start = at + self._unpack("<I", at)
        return start + 4, self._unpack("<I", start)


def _root(metadata: bytes) -> _Table:
    if len(metadata) < 8:
        raise InputError("The input table's metadata is cut short (a truncated IPC message).")
    return _Table(metadata, struct.unpack_from("<I", metadata, 0)[0])


def declared_batch_bytes(metadata: bytes, body: pa.Buffer | None) -> int:
    """What one record or dictionary batch message says it decodes to, without decompressing anything."""
    message = _root(metadata)
    kind = message.scalar(MESSAGE_HEADER_TYPE, "<B")
    if kind not in (HEADER_RECORD_BATCH, HEADER_DICTIONARY_BATCH):
        return 0
    batch = message.table(MESSAGE_HEADER)
    if batch is not None and kind == HEADER_DICTIONARY_BATCH:
        batch = batch.table(DICTIONARY_DATA)
    if batch is None:
        raise InputError("A batch of the input table has no header (a malformed IPC message).")
    if batch.scalar(BATCH_LENGTH, "<q") < 0:
        raise InputError("A batch of the input table has a negative row count (a malformed IPC message).")
    compressed = batch.table(BATCH_COMPRESSION) is not None
    body_bytes = memoryview(body) if body is not None else memoryview(b"")
    body_size = len(body_bytes)
    first, count = batch.vector(BATCH_BUFFERS)
    total = 0
    for i in range(count):
        at = first + i * BUFFER_STRUCT.size
        if at + BUFFER_STRUCT.size > len(metadata):
            raise InputError("The input table's buffer list is cut short (a malformed IPC message).")
        offset, length = BUFFER_STRUCT.unpack_from(metadata, at)
        if offset < 0 or length < 0 or offset + length > body_size:
            raise InputError(
                "A buffer of the input table lies outside its message body (bad offsets or lengths)."
            )
        if compressed and length >= 8:
            (decoded,) = struct.unpack_from("<q", body_bytes, offset)
            total += length - 8 if decoded == NOT_COMPRESSED else decoded
            if decoded < NOT_COMPRESSED:
                raise InputError("A compressed buffer of the input table declares a negative size.")
        else:
            total += length
    return total


def decode_table(ipc: bytes, max_bytes: int) -> pa.Table:
    """The caller's Arrow IPC stream as a validated table, refused when it would decode past `max_bytes`."""
    source = pa.py_buffer(ipc)
    declared = 0
    try:
        for message in pa.ipc.MessageReader.open_stream(source):
            declared += declared_batch_bytes(message.metadata.to_pybytes(), message.body)
            if declared > max_bytes:
                raise InputError(
                    f"The input table decodes to more than {max_bytes >> 20} MiB (its batches declare at "
                    f"least {declared >> 20} MiB); send fewer rows or columns, or aggregate it in SQL first."
                )
        reader = pa.ipc.open_stream(source)
        batches = []
        for batch in reader:
            batch.validate(full=True)
            batches.append(batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)
    except InputError:
        raise
    except (pa.ArrowException, ValueError, OSError, MemoryError) as exc:
        raise InputError(
            f"The input table is not a valid Arrow IPC stream: {type(exc).__name__}: {exc}"[:600]
        ) from exc
    if table.get_total_buffer_size() > max_bytes:
        raise InputError(f"The input table decodes to more than {max_bytes >> 20} MiB; send fewer rows.")
    # pandas spends at least a byte a cell (8 for most types), even on columns Arrow stores in no buffer
    # (nulls) or in bits (booleans): bounded here, not by a MemoryError half-way through.
    cells = table.num_rows * max(table.num_columns, 1)
    if cells * CELL_BYTES > max_bytes:
        raise InputError(
            f"The input table has {table.num_rows:,} rows and {table.num_columns} columns, more than a "
            f"DataFrame of {max_bytes >> 20} MiB holds; send fewer rows."
        )
    return table
