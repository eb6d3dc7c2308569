"""The gRPC adapter of the sandbox: protobuf in, plain calls, protobuf out."""

from __future__ import annotations

import grpc

from common.errors import InsightError, abort_with
from common.identity import current_user_id
from insightx.v1 import py_sandbox_pb2 as pb
from insightx.v1 import py_sandbox_pb2_grpc
from services.py_sandbox.sandbox import PySandbox


class PySandboxServicer(py_sandbox_pb2_grpc.PySandboxServiceServicer):
    """Translates PySandboxService calls to PySandbox."""

    def __init__(self, sandbox: PySandbox) -> None:
        self.sandbox = sandbox

    async def ValidateCode(
        self, request: pb.ValidateCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateCodeResponse:
        verdict = self.sandbox.validate(request.code)
        return pb.ValidateCodeResponse(valid=verdict.valid, violations=verdict.violations)

    async def RunCode(
        self, request: pb.RunCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunCodeResponse:
        input_ipc = request.input_table.arrow_ipc if request.HasField("input_table") else None
        user_id = current_user_id(context) or ""  # checked by the server's credential interceptor
        try:
            return await self.sandbox.run(
                request.session_id, request.code, request.timeout_s, input_ipc, user_id=user_id
            )
        except InsightError as exc:
            await abort_with(context, exc)
            raise

    async def GetSandboxStatus(
        self, request: pb.GetSandboxStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSandboxStatusResponse:
        status = self.sandbox.status()
        iso = status.isolation
        return pb.GetSandboxStatusResponse(
            isolation=pb.Isolation(
                namespaces=list(iso.get("namespaces") or []),
                seccomp=bool(iso.get("seccomp")),
                no_new_privs=bool(iso.get("no_new_privs")),
                uid=int(iso.get("uid", -1)),
                level=str(iso.get("level", "none")),
                private_filesystem=bool(iso.get("private_filesystem")),
                rlimits=list(iso.get("rlimits") or []),
                clean_environment=bool(iso.get("clean_environment")),
                problems=[*(iso.get("problems") or []), *status.limits["problems"]],
                cgroup=str(status.limits["cgroup"]),
                cgroup_controllers=list(iso.get("cgroup_controllers") or []),
                run_memory_limit_bytes=int(status.limits["run_memory_limit_bytes"]),
                memory_total_bytes=int(status.limits["memory_total_bytes"]),
                run_pids_limit=int(status.limits["run_pids_limit"]),
                run_cpu_limit=float(status.limits["run_cpu_limit"]),
                uid_first=int(status.limits["uid_first"]),
                uid_last=int(status.limits["uid_last"]),
            ),
            running_children=status.running,
            zygotes=status.zygotes,
            capacity=status.capacity,
            queued=status.queued,
            minimum_level=status.minimum_level,
            accepting_code=status.accepting_code,
            weak_isolation_allowed=status.weak_allowed,
            zygote_restarts=status.restarts,
        )
