"""The contracts: generated stubs match the protos, and the protos keep buf's style."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import pytest

from tools.gen_protos import ROOT, generate, proto_files

# DESIGN.md §2 names the chat stream's message ChatEvent; the frontend contract depends on that name.
_DESIGNED_RESPONSES = {"Chat": "ChatEvent"}


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = tmp_path / "insightx" / "v1"
    checked_in = ROOT / "insightx" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.suffix in {".py", ".pyi"} and p.name != "__init__.py")
    assert names, "protoc generated nothing"
    _, mismatch, missing = filecmp.cmpfiles(fresh, checked_in, names, shallow=False)
    assert not mismatch and not missing, f"stale stubs {mismatch + missing}: run `make proto`"


@pytest.mark.parametrize("proto", proto_files(), ids=lambda p: p.name)
def test_proto_follows_buf_style(proto: Path) -> None:
    text = proto.read_text()
    assert "package insightx.v1;" in text
    lines = text.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        is_field = re.match(r"^(optional |repeated )?[\w.]+ \w+ = \d+;$", stripped)
        is_rpc = stripped.startswith("rpc ")
        if is_field or is_rpc:
            assert lines[number - 1].strip().startswith("//"), f"{proto.name}:{number + 1} lacks a comment"
    for enum_body in re.findall(r"enum (\w+) \{(.*?)\}", text, re.S):
        name, body = enum_body
        first = re.search(r"(\w+) = 0;", body)
        assert first and first.group(1).endswith("_UNSPECIFIED"), f"{name}'s zero value must be *_UNSPECIFIED"
    for rpc, request, response in re.findall(
        r"rpc (\w+)\((?:stream )?(\w+)\) returns \((?:stream )?(\w+)\)", text
    ):
        expected = _DESIGNED_RESPONSES.get(rpc, f"{rpc}Response")
        assert request == f"{rpc}Request" and response == expected, f"{rpc} must use its own pair"


def test_generated_modules_import_as_package_paths() -> None:
    from insightx.v1 import (  # noqa: F401
        llm_gateway_pb2_grpc,
        orchestrator_pb2_grpc,
        py_sandbox_pb2_grpc,
        sql_engine_pb2_grpc,
    )
    from insightx.v1.sql_engine_pb2 import ExecuteSqlRequest

    request = ExecuteSqlRequest(session_id="s", sql="SELECT 1", max_rows=5, timeout_ms=10)
    assert ExecuteSqlRequest.FromString(request.SerializeToString()).max_rows == 5
