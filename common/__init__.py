"""What every InsightX service needs, written once: settings, logging, errors, channels, servers, stores."""

import os

# gRPC core's fork handlers restart its poller in a child that Popen (close_fds) has already stripped of the
# poller's epoll descriptor, and the child aborts before exec (grpc/grpc#43055): every process of ours that
# starts others (the supervisor, the engine's fork server, the tests) ran into it under load. No child of
# ours uses gRPC after a fork, so the handlers are turned off before gRPC is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
