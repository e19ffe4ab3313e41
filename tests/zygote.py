"""Real processes of the kit's commands without a fresh import of torch and timm each time.

A test that needs a command in a process of its own (to kill it, to signal it, to run it in a
network namespace, beside the test) used to start a new interpreter, which spends about five of
its seconds importing torch, torchvision and timm before the command begins. The zygote is one
interpreter, started once a session, that imports those and waits; each request forks it, and the
child runs the command as `python -m` would (runpy, `__main__`, sys.argv, the request's
environment and working directory, its own stdin/stdout/stderr), so exit codes, signals, SIGKILL
and what is printed are a real process's. It has run nothing itself, so no OpenMP pool exists to
break in the fork, and the child keeps torch's default threads (results are bit-identical to a run
in the test's own process).

What differs from a fresh interpreter: modules are imported before the request's environment is
set, so a variable read at import time is not seen — except the kit's own test fault
(core.interrupts.TEST_FAULT), which the child reads again. Tests of import-time behaviour (offline
hub settings, startup time, a fresh virtualenv) start real interpreters.

    proc = zygote().spawn(["competition.train", "--config", cfg], env=env, stdout=subprocess.DEVNULL)
    proc.send_signal(signal.SIGINT); out, err = proc.communicate(timeout=60); proc.returncode
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRELOAD = ("torch", "torchvision", "timm", "pandas", "sklearn.linear_model", "albumentations", "optuna",
           "competition.train", "competition.predict", "competition.auto", "competition.tasks")

# The server: one loop over requests and the exits of its children (no threads: it forks).
SERVER = r"""
import ctypes, importlib, json, os, runpy, select, signal, socket, struct, sys, traceback
for name in sys.argv[2].split(","):
    importlib.import_module(name)
sock = socket.socket(fileno=int(sys.argv[1]))

def send(message):
    data = json.dumps(message).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)

def child(request, fds):
    sock.close()
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("unshare_net") and ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    from competition.core import interrupts
    interrupts.TEST_FAULT = interrupts._read_test_fault()  # read at import; the request's own
    argv = list(request["argv"])
    code = 0
    try:
        if argv[0] == "-c":  # python -c CODE ARGS…
            sys.argv = ["-c", *argv[2:]]
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = argv
            sys.modules.pop(argv[0], None)  # run as __main__ only, as `python -m` does (runpy warns otherwise)
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code)

send({"ready": os.getpid()})
buffer, pending = b"", []
children = set()
while True:
    readable, _, _ = select.select([sock], [], [], 0.02)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        children.discard(pid)
        send({"exited": pid, "returncode": os.waitstatus_to_exitcode(status)})
    if not readable:
        continue
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
    if not data:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        break
    buffer, pending = buffer + data, pending + list(fds)  # the descriptors come with a request's first bytes
    while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack("!I", buffer[:4])[0]:
        size = struct.unpack("!I", buffer[:4])[0]
        request, buffer = json.loads(buffer[4:4 + size]), buffer[4 + size:]
        fds, pending = pending[:3], pending[3:]
        pid = os.fork()
        if pid == 0:
            try:
                child(request, fds)
            finally:
                os._exit(1)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        send({"spawned": pid})
"""


class Zygote:
    """The server process and the replies it has sent that no one has read yet."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.server = subprocess.Popen([sys.executable, "-c", SERVER, str(theirs.fileno()), ",".join(PRELOAD)],
                                       pass_fds=[theirs.fileno()], env=env, cwd=REPO)
        theirs.close()
        self.sock, self.buffer, self.exits = ours, b"", {}
        self.ready = False
        atexit.register(self.close)

    def _read(self) -> dict:
        while len(self.buffer) < 4 or len(self.buffer) < 4 + struct.unpack("!I", self.buffer[:4])[0]:
            data = self.sock.recv(1 << 16)
            if not data:
                raise RuntimeError(f"the zygote ended (exit {self.server.wait()})")
            self.buffer += data
        size = struct.unpack("!I", self.buffer[:4])[0]
        message, self.buffer = json.loads(self.buffer[4:4 + size]), self.buffer[4 + size:]
        if "exited" in message:
            self.exits[message["exited"]] = message["returncode"]
        return message

    def _until(self, key: str) -> dict:
        while True:
            message = self._read()
            if key in message:
                return message

    def spawn(self, argv: list[str], env: dict | None = None, cwd: str | Path | None = None,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, unshare_net: bool = False) -> Process:
        """`python -m argv[0] argv[1:]` (or, when argv[0] is "-c", `python -c argv[1] argv[2:]`) in a
        child of the zygote: stdout and stderr to a pipe (PIPE),
        nowhere (DEVNULL) or an open file; `unshare_net`: in a network namespace with no route."""
        if not self.ready:
            self._until("ready")
            self.ready = True
        ends, ours = [], {}
        with open(os.devnull, "rb") as stdin:
            fds = [os.dup(stdin.fileno())]
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            if target is subprocess.PIPE:
                read, write = os.pipe()
                ours[name] = os.fdopen(read, "r", encoding="utf-8", errors="replace")
                fds.append(write)
            elif target is subprocess.DEVNULL:
                fds.append(os.open(os.devnull, os.O_WRONLY))
            else:
                fds.append(os.dup(target.fileno()))
            ends.append(fds[-1])
        request = json.dumps({"argv": list(argv), "env": dict(os.environ if env is None else env),
                              "cwd": str(cwd or os.getcwd()), "unshare_net": unshare_net}).encode()
        socket.send_fds(self.sock, [struct.pack("!I", len(request)) + request], fds)
        for fd in fds:
            os.close(fd)
        pid = self._until("spawned")["spawned"]
        return Process(self, pid, ours.get("stdout"), ours.get("stderr"))

    def close(self) -> None:
        if self.server.poll() is None:
            self.sock.close()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()


class Process:
    """A child of the zygote, as much of subprocess.Popen as the tests use."""

    def __init__(self, zygote: Zygote, pid: int, stdout, stderr):
        self.zygote, self.pid, self.stdout, self.stderr = zygote, pid, stdout, stderr
        self.returncode: int | None = None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)

    def poll(self) -> int | None:
        """Its exit code when it has ended, else None (without waiting)."""
        if self.returncode is None:
            self.zygote.sock.setblocking(False)
            try:
                while self.pid not in self.zygote.exits:
                    self.zygote._read()
            except BlockingIOError:
                pass
            finally:
                self.zygote.sock.setblocking(True)
            if self.pid in self.zygote.exits:
                self.returncode = self.zygote.exits.pop(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pid not in self.zygote.exits:
            if deadline is not None:
                self.zygote.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.zygote._read()
            except TimeoutError:
                os.kill(self.pid, 9)
                raise subprocess.TimeoutExpired(["zygote", str(self.pid)], timeout) from None
            finally:
                self.zygote.sock.settimeout(None)
        self.returncode = self.zygote.exits.pop(self.pid)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Everything it printed, once it has ended (both pipes are read on threads while it runs:
        a child writing more than a pipe holds must not block)."""
        import threading

        got: dict[str, str] = {}
        readers = [threading.Thread(target=lambda n=n, s=s: got.__setitem__(n, s.read()))
                   for n, s in (("out", self.stdout), ("err", self.stderr)) if s is not None]
        for r in readers:
            r.start()
        self.wait(timeout)
        for r in readers:
            r.join()
        for s in (self.stdout, self.stderr):
            if s is not None:
                s.close()
        return got.get("out"), got.get("err")


def run(argv: list[str], env: dict | None = None, cwd: str | Path | None = None, stdout=subprocess.PIPE,
        timeout: float = 300, unshare_net: bool = False) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True) of `python -m argv…`, through the zygote."""
    proc = zygote().spawn(argv, env=env, cwd=cwd, stdout=stdout, unshare_net=unshare_net)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


_ZYGOTE: Zygote | None = None


def zygote() -> Zygote:
    """The session's zygote, started at the first call (conftest starts it early, in the background)."""
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.server.poll() is not None:
        _ZYGOTE = Zygote()
    return _ZYGOTE
