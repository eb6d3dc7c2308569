"""The attack corpus: each snippet meets the operating-system boundary with the AST policy switched off.

For every snippet: no canary (environment or file) leaks into anything the reply carries, no file changes,
the server stays up, and the reply comes within the timeout plus one second with a clear error category
(or, for the few snippets that cannot fail loudly, with a result that proves the attempt achieved nothing).
The policy's own verdict on the same corpus is checked at the end: it is a courtesy, not the boundary.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from insightx.v1 import py_sandbox_pb2 as pb
from services.py_sandbox import policy
from services.py_sandbox.isolation import CLEAN_ENV
from tests.services.py_sandbox.conftest import ENV_CANARY, FILE_CANARY, Sandbox, sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]
in_module_loop = pytest.mark.asyncio(loop_scope="module")

C = pb.RunErrorCategory
EXC, TIMEOUT, MEMORY, OUTPUT, INVALID = (
    C.RUN_ERROR_CATEGORY_EXCEPTION,
    C.RUN_ERROR_CATEGORY_TIMEOUT,
    C.RUN_ERROR_CATEGORY_MEMORY,
    C.RUN_ERROR_CATEGORY_OUTPUT_LIMIT,
    C.RUN_ERROR_CATEGORY_INVALID_RESULT,
)
TIMEOUT_S = 2.0


def result_is(expected: object) -> Callable[[pb.RunCodeResponse], bool]:
    return lambda r: not r.HasField("error") and json.loads(r.result_json) == expected


def spawn_failed(r: pb.RunCodeResponse) -> bool:
    """system() answers 127 << 8 when it cannot even start the shell (posix_spawn refused)."""
    return not r.HasField("error") and json.loads(r.result_json) in (-1, 127 << 8)


def env_is_clean(r: pb.RunCodeResponse) -> bool:
    return not r.HasField("error") and set(json.loads(r.result_json)) <= set(CLEAN_ENV)


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    expect: frozenset[int] = frozenset({EXC})
    check: Callable[[pb.RunCodeResponse], bool] | None = None  # instead of an error category
    timeout_s: float = TIMEOUT_S  # memory bombs get longer: zeroing 512 MiB on a busy 2-core box takes time


A = Attack
CORPUS = [
    # -- import escapes -----------------------------------------------------------------------------
    A("dunder-import-system", "assert __import__('os').system('id > /tmp/pwned') == 0"),
    A("importlib-subprocess", "import importlib\nimportlib.import_module('subprocess').run(['id'])"),
    A("sys-modules-execv", "import sys\nsys.modules['os'].execv('/bin/sh', ['sh', '-c', 'id'])"),
    A("pandas-io-common-os", "result = pd.io.common.os.listdir('{data_dir}')"),
    A(
        "pickle-reduce-system",
        "import pickle\nresult = pickle.loads(b\"cos\\nsystem\\n(S'id'\\ntR.\")",
        check=spawn_failed,
    ),
    A(
        "read-pickle-of-a-payload",
        "import pickle, io\nb = io.BytesIO(pickle.dumps(0))\n"
        "b = io.BytesIO(b\"cposix\\nsystem\\n(S'id > /tmp/p'\\ntR.\")\nresult = pd.read_pickle(b)",
        check=spawn_failed,
    ),
    A("ctypes-raw-fork", "import ctypes\nresult = ctypes.CDLL(None).syscall(57)", check=result_is(-1)),
    A(
        "ctypes-kill-everyone",
        "import ctypes\nresult = ctypes.CDLL(None).syscall(62, -1, 9)",
        check=result_is(-1),
    ),
    # -- attribute and frame escapes ---------------------------------------------------------------
    A(
        "subclasses-popen",
        "p = [c for c in ().__class__.__mro__[1].__subclasses__() if c.__name__ == 'Popen'][0]\np(['id'])",
    ),
    A(
        "generator-frame-globals",
        "def gen():\n    yield\ng = gen()\nnext(g)\nb = g.gi_frame.f_globals['__builtins__']\n"
        "result = dict(b['__import__']('os').environ)",
        check=env_is_clean,
    ),
    A(
        "traceback-frame-environ",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
        "    f = e.__traceback__.tb_frame\n"
        "result = dict(f.f_globals['__builtins__']['__import__']('os').environ)",
        check=env_is_clean,
    ),
    A("decorator-exec", '@exec\n@lambda _: "import os; os.kill(os.getppid(), 9)"\nclass A: pass'),
    A(
        "format-string-walk",
        "result = '{{0.__class__.__mro__[1].__subclasses__}}'.format(1)[:20]",
        check=lambda r: not r.HasField("error"),
    ),
    A(
        "fullwidth-eval-uid",
        "result = ｅｖａｌ(\"__import__('os').getuid()\")",
        check=lambda r: json.loads(r.result_json or "0") not in (0, None),
    ),
    A("builtins-open-canary", "import builtins\nresult = builtins.open('{canary}').read()"),
    # -- files ---------------------------------------------------------------------------------------
    A("read-canary-file", "result = open('{canary}').read()"),
    A("read-canary-in-data-dir", "result = open('{data_dir}/secret.txt').read()"),
    A("proc-self-environ", "result = open('/proc/self/environ', 'rb').read().decode()"),
    A("proc-1-environ", "result = open('/proc/1/environ', 'rb').read().decode()"),
    A(
        "proc-parent-environ",
        "import os\nresult = [open(f'/proc/{{p}}/environ','rb').read().decode() "
        "for p in os.listdir('/proc') if p.isdigit()]",
        expect=frozenset({EXC}),
        check=lambda r: not r.HasField("error") or r.error.category == EXC,
    ),
    A("etc-shadow", "result = open('/etc/shadow').read()"),
    A("write-the-dataset", "open('{dataset}', 'wb').write(b'gone')"),
    A("write-into-packages", "import numpy\nopen(numpy.__file__, 'a').write('#')"),
    A("write-root", "open('/pwned', 'w').write('x')"),
    A("list-data-dir", "import os\nresult = os.listdir('{data_dir}')"),
    A("dev-mem", "result = open('/dev/mem', 'rb').read(16)"),
    # -- network ---------------------------------------------------------------------------------------
    A(
        "tcp-loopback",
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "s.sendall(b'{canary_text}')",
    ),
    A(
        "udp-loopback",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))",
    ),
    A("dns", "import socket\nresult = socket.getaddrinfo('example.com', 80)"),
    A("urllib", "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)"),
    A("unix-socketpair", "import socket\nsocket.socketpair()"),
    # -- processes and signals ----------------------------------------------------------------------------
    A("fork", "import os\nos.fork()"),
    A("subprocess-shell", "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'id'])"),
    A("kill-parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"),
    A("kill-pid-1", "import os, signal\nos.kill(1, signal.SIGKILL)"),
    A("killpg", "import os, signal\nos.killpg(0, signal.SIGKILL)"),
    A("setsid", "import os\nos.setsid()"),
    A("ptrace", "import ctypes\nresult = ctypes.CDLL(None).ptrace(16, 1, 0, 0)", check=result_is(-1)),
    A("unshare-user", "import ctypes\nresult = ctypes.CDLL(None).unshare(0x10000000)", check=result_is(-1)),
    A(
        "mount-proc",
        "import ctypes\nresult = ctypes.CDLL(None).mount(b'x', b'/tmp', b'tmpfs', 0, None)",
        check=result_is(-1),
    ),
    A("setuid-root", "import os\nos.setuid(0)"),
    # -- resources ------------------------------------------------------------------------------------------
    A("cpu-loop", "while True:\n    pass", expect=frozenset({TIMEOUT})),
    A("regex-bomb-in-c", "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')", expect=frozenset({TIMEOUT})),
    A("sleep-an-hour", "import time\ntime.sleep(3600)", expect=frozenset({TIMEOUT})),
    A(
        "ignore-sigterm-and-loop",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True:\n    time.sleep(0.01)",
        expect=frozenset({TIMEOUT}),
    ),
    A("memory-at-once", "x = bytearray(8 * 1024 ** 3)", timeout_s=8.0, expect=frozenset({MEMORY})),
    A(
        "memory-gradual",
        "keep = []\nwhile True:\n    keep.append(bytearray(10 ** 8))",
        timeout_s=8.0,
        expect=frozenset({MEMORY}),
    ),
    A("numpy-huge", "x = np.ones((60000, 60000))", timeout_s=8.0, expect=frozenset({MEMORY})),
    A("fork-bomb", "import os\nwhile True:\n    os.fork()"),
    A(
        "thread-bomb",
        "import threading, time\nfor _ in range(100000):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
        timeout_s=8.0,
        expect=frozenset({EXC, MEMORY}),
    ),
    A(
        "disk-fill-tmp",
        "with open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(b'0' * 2 ** 20)",
        expect=frozenset({EXC, OUTPUT}),
    ),
    # -- output --------------------------------------------------------------------------------------
    A("stdout-flood", "while True:\n    print('x' * 1000)", expect=frozenset({OUTPUT})),
    A(
        "stderr-flood-raw-fd",
        "import os\nwhile True:\n    os.write(2, b'y' * 4096)",
        expect=frozenset({OUTPUT}),
    ),
    A("result-too-large", "result = 'x' * (40 * 2 ** 20)", expect=frozenset({OUTPUT})),
    A(
        "forged-frame-huge-length",
        "import os, struct\nos.write(3, b'J' + struct.pack('>I', 2 ** 31))\nresult = 1",
        expect=frozenset({INVALID, OUTPUT}),
    ),
    A(
        "forged-frame-garbage",
        "import os\nos.write(3, b'garbage that is not a frame')\nresult = 1",
        expect=frozenset({INVALID}),
    ),
    A(
        "forged-second-result",
        "import os, struct\np = b'{{\"forged\": true}}'\n"
        "os.write(3, b'J' + struct.pack('>I', len(p)) + p)\nresult = 1",
        expect=frozenset({INVALID}),
    ),
    A("exit-without-result", "import os\nos._exit(0)", expect=frozenset({INVALID})),
    A("sys-exit", "import sys\nsys.exit(3)"),
    A("recursion", "def f():\n    return f()\nf()"),
]


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener that must never see a connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    yield server
    server.close()


def render(attack: Attack, sandbox: Sandbox, port: int) -> str:
    return attack.code.format(
        data_dir=sandbox.data_dir,
        canary=sandbox.canary_files[1],
        dataset=sandbox.dataset,
        port=port,
        canary_text=FILE_CANARY,
    )


def leaked(reply: pb.RunCodeResponse) -> bool:
    blobs = [reply.result_json, reply.stdout, reply.stderr, reply.error.message]
    raw = reply.result_table.arrow_ipc + b"".join(f.data for f in reply.figures)
    return any(c in text for c in (ENV_CANARY, FILE_CANARY) for text in blobs) or any(
        c.encode() in raw for c in (ENV_CANARY, FILE_CANARY)
    )


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert len({a.name for a in CORPUS}) == len(CORPUS)


@in_module_loop
async def test_every_attack_is_contained(bare_sandbox: Sandbox, listener: socket.socket) -> None:
    sandbox = bare_sandbox
    before = {path: sha256(path) for path in [sandbox.dataset, *sandbox.canary_files]}
    zygotes_before = (await sandbox.status()).zygotes
    port = listener.getsockname()[1]
    gate = asyncio.Semaphore(4)  # two cores: a few at a time keeps the timing assertions honest

    async def attempt(attack: Attack) -> tuple[Attack, pb.RunCodeResponse, float]:
        async with gate:
            started = time.monotonic()
            reply = await sandbox.run(render(attack, sandbox, port), timeout_s=attack.timeout_s)
            return attack, reply, time.monotonic() - started

    outcomes = await asyncio.gather(*(attempt(a) for a in CORPUS))
    failures = []
    for attack, reply, elapsed in outcomes:
        problems = []
        if leaked(reply):
            problems.append("canary leaked")
        if elapsed > attack.timeout_s + 1.0:
            problems.append(f"reply after {elapsed:.2f} s")
        if attack.check is not None:
            if not attack.check(reply):
                problems.append("check failed")
        elif reply.error.category not in attack.expect:
            problems.append(f"category {C.Name(reply.error.category)}")
        if problems:
            failures.append(
                f"{attack.name}: {problems} -> {reply.error.message[:200]!r} {reply.result_json[:80]!r}"
            )
    assert not failures, "\n".join(failures)

    assert {path: sha256(path) for path in before} == before
    with pytest.raises(BlockingIOError):
        listener.accept()
    status = await sandbox.status()
    assert status.zygotes == zygotes_before
    assert status.isolation.level == "strong"
    healthy = await sandbox.run("result = int(len(df))")
    assert json.loads(healthy.result_json) == 2000


@in_module_loop
async def test_timeouts_carry_the_timeout_category_and_message(bare_sandbox: Sandbox) -> None:
    started = time.monotonic()
    reply = await bare_sandbox.run("import time\ntime.sleep(3600)", timeout_s=1.0)
    assert time.monotonic() - started < 2.0
    assert reply.error.category == TIMEOUT
    assert "1 s" in reply.error.message


@in_module_loop
async def test_monkeypatching_pandas_does_not_reach_the_next_run(bare_sandbox: Sandbox) -> None:
    true_mean = json.loads((await bare_sandbox.run("result = float(df['amount'].mean())")).result_json)
    patched = await bare_sandbox.run(
        "pd.Series.mean = lambda self, *a, **k: 42.0\ndf['amount'] = 0.0\nresult = float(df['amount'].mean())"
    )
    assert json.loads(patched.result_json) == 42.0
    for _ in range(4):  # whichever child or zygote serves next
        again = await bare_sandbox.run("result = float(df['amount'].mean())")
        assert json.loads(again.result_json) == pytest.approx(true_mean)


@in_module_loop
async def test_atexit_and_leftover_threads_die_with_their_run(bare_sandbox: Sandbox) -> None:
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: open('/tmp/atexit-mark', 'w').write('x'))\n"
        "def haunt():\n    while True:\n        print('haunting', flush=True)\n        time.sleep(0.05)\n"
        "threading.Thread(target=haunt).start()\n"
        "result = 'left a thread'"
    )
    started = time.monotonic()
    reply = await bare_sandbox.run(code, timeout_s=5.0)
    assert json.loads(reply.result_json) == "left a thread"
    assert time.monotonic() - started < 2.0  # answered without waiting for the thread
    await asyncio.sleep(0.3)
    assert (await bare_sandbox.status()).running_children == 0
    later = await bare_sandbox.run("import os\nresult = os.path.exists('/tmp/atexit-mark')")
    assert json.loads(later.result_json) is False
    assert "haunting" not in later.stdout


def test_the_policy_turns_most_of_the_corpus_away_early() -> None:
    """A courtesy: most snippets never reach a child when the policy is on (the OS stops the rest)."""
    rejected = [a.name for a in CORPUS if not policy.check(a.code).valid]
    assert len(rejected) >= 0.8 * len(CORPUS), sorted(set(a.name for a in CORPUS) - set(rejected))


SCANNER = """
import ctypes, hashlib
prefix = b'xr7q'
control = prefix + bytes([90]) * 28  # made at run time: a marker this run does hold
wanted = {{hashlib.sha256(control).hexdigest(): 'control', {targets}}}
found = set()
for line in open('/proc/self/maps'):
    parts = line.split()
    if len(parts) < 5 or parts[1] != 'rw-p' or (len(parts) > 5 and parts[5].startswith('[v')):
        continue
    start, end = (int(x, 16) for x in parts[0].split('-'))
    step = 16 << 20
    for offset in range(start, end, step):
        chunk = ctypes.string_at(offset, min(step + 32, end - offset))
        i = chunk.find(prefix)
        while i >= 0:
            name = wanted.get(hashlib.sha256(chunk[i:i + 32]).hexdigest())
            if name:
                found.add(name)
            i = chunk.find(prefix, i + 1)
result = sorted(found)
"""


@in_module_loop
async def test_a_child_finds_nothing_of_earlier_runs_in_its_memory(bare_sandbox: Sandbox) -> None:
    """Children are cloned from the template, which never holds a job, a table or a result."""
    import hashlib
    import secrets

    import pyarrow as pa

    from common.arrow import to_table_result

    def marker() -> str:
        return "xr7q" + secrets.token_hex(14)

    in_code, in_result, in_table = marker(), marker(), marker()
    first = await bare_sandbox.run(f"note = '{in_code}'\nresult = '{in_result}'")
    assert json.loads(first.result_json) == in_result
    table = to_table_result(pa.table({"secret": [in_table] * 10}))
    given = pb.RunCodeRequest(code="result = df['secret'].iloc[0]", input_table=table, timeout_s=5)
    assert json.loads((await bare_sandbox.stub.RunCode(given, timeout=15)).result_json) == in_table
    targets = ", ".join(
        f"'{hashlib.sha256(m.encode()).hexdigest()}': '{name}'"
        for name, m in (("code", in_code), ("result", in_result), ("table", in_table))
    )
    for _ in range(3):  # blank and primed children alike
        scan = await bare_sandbox.run(SCANNER.format(targets=targets), timeout_s=20)
        assert not scan.HasField("error"), scan.error.message
        assert json.loads(scan.result_json) == ["control"]


@in_module_loop
async def test_a_flood_is_cut_at_the_cap_and_the_run_stopped(bare_sandbox: Sandbox) -> None:
    started = time.monotonic()
    reply = await bare_sandbox.run("print('begin')\nwhile True:\n    print('x' * 1000)", timeout_s=10)
    assert time.monotonic() - started < 5  # stopped at the cap, not at the deadline
    assert reply.error.category == OUTPUT
    assert reply.stdout_truncated and not reply.stderr_truncated
    assert len(reply.stdout.encode()) == bare_sandbox.settings.sandbox_max_output_bytes
    assert reply.stdout.startswith("begin\n")
