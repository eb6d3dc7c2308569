"""ImportDataset's chunks are read as views of the received bytes; anything else as protobuf reads it."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from insightx.v1 import sql_engine_pb2 as pb
from services.sql_engine.chunks import read_import_request


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 1 << 20, (1 << 22) + 3])
def test_a_chunk_is_a_view_of_its_bytes(size: int) -> None:
    chunk = bytes(range(256)) * (size // 256) + bytes(size % 256)
    read = read_import_request(pb.ImportDatasetRequest(chunk=chunk).SerializeToString())
    assert isinstance(read, memoryview)
    assert read.tobytes() == chunk


def test_the_metadata_is_parsed_by_protobuf() -> None:
    sent = pb.ImportDatasetRequest(metadata=pb.ImportMetadata(filename="a.csv", sheet="Q1"))
    read = read_import_request(sent.SerializeToString())
    assert isinstance(read, pb.ImportDatasetRequest)
    assert read.metadata.filename == "a.csv" and read.metadata.sheet == "Q1"


def test_a_chunk_with_more_in_its_message_is_parsed_by_protobuf() -> None:
    # An unknown field after the chunk (a newer client): the view would swallow it, protobuf does not.
    data = pb.ImportDatasetRequest(chunk=b"a,b\n").SerializeToString() + b"\x18\x01"
    read = read_import_request(data)
    assert isinstance(read, pb.ImportDatasetRequest) and read.chunk == b"a,b\n"


def test_a_truncated_chunk_is_refused_as_protobuf_refuses_it() -> None:
    data = pb.ImportDatasetRequest(chunk=b"x" * 300).SerializeToString()[:-1]
    with pytest.raises(DecodeError):
        read_import_request(data)
