"""Run an answer engine in a supervised child process.

A segfault, an abort or an out-of-memory kill inside native code (llama.cpp) cannot be caught
in the process it happens in, so the model lives in a child process (as Ollama and LocalAI run
llama.cpp). The parent talks to it over a pipe, one request at a time (the model answers one
at a time anyway), and a supervisor thread restarts it when it dies, with exponential back-off
while it keeps dying. While the child is down every call raises ``EngineUnavailable`` at once
(the HTTP layer answers 503 with ``Retry-After``), and ``state()`` says what is going on.

The child keeps its llama.cpp context between requests, so the prefix cache still works.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from rag.generation.base import (
    ChatMessage,
    Completion,
    EngineState,
    EngineUnavailable,
    Generator,
)
from rag.generation.cancel import Cancelled, cancellation, cancelled
from rag.generation.states import StateReport

log = logging.getLogger("rag.worker")

#: Builds the engine inside the child. Must be picklable (a module-level function or a
#: ``functools.partial`` of one).
Factory = Callable[[], Generator]


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGSEGV": " (a crash in native code)",
            "SIGKILL": " (killed, e.g. by the out-of-memory killer)",
            "SIGABRT": " (aborted by native code)",
            "SIGILL": " (an instruction this CPU lacks: rebuild llama-cpp-python here)",
        }.get(name, "")
        return f"died of {name}{hint}"
    return f"exited with status {code}"


def _child_main(conn: Connection, factory: Factory) -> None:
    """The child's loop: build the engine, then serve requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops us
    try:
        engine = factory()
    except BaseException as exc:  # reported to the parent, which marks the engine failed
        conn.send(("load-error", 0, f"{type(exc).__name__}: {exc}"))
        return
    info: dict[str, Any] = {"name": engine.name}
    for attr in ("extra_buffers", "extra_buffers_reason", "system_info"):
        if hasattr(engine, attr):
            info[attr] = getattr(engine, attr)
    conn.send(("ready", 0, info))
    while True:
        try:
            kind, rid, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "stream":
                it = engine.stream_chat(**payload)
                cancelled = False
                try:
                    for piece in it:
                        conn.send(("piece", rid, piece))
                        while conn.poll():
                            msg = conn.recv()
                            if msg[0] == "cancel" and msg[1] == rid:
                                cancelled = True
                        if cancelled:
                            break
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
                conn.send(("end", rid, None))
            elif kind == "call":
                method, kwargs = payload
                try:
                    with cancellation(_PipeCancel(conn, rid)):
                        result = getattr(engine, method)(**kwargs)
                except Cancelled:
                    conn.send(("cancelled", rid, None))
                    continue
                conn.send(("result", rid, result))
            elif kind == "cancel":
                continue  # a cancel that arrived after its stream ended
        except (EOFError, OSError, BrokenPipeError):
            return
        except Exception as exc:
            conn.send(("error", rid, f"{type(exc).__name__}: {exc}"))


class _PipeCancel:
    """In the child: a cancel message from the parent for request ``rid`` sets the flag."""

    def __init__(self, conn: Connection, rid: int) -> None:
        self.conn, self.rid, self.flag = conn, rid, False

    def is_set(self) -> bool:
        while not self.flag and self.conn.poll():
            msg = self.conn.recv()
            self.flag = msg[0] == "cancel" and msg[1] == self.rid
        return self.flag


class _ChildProcess:
    """The model process: ``python -m rag.generation.worker FD``, talking over a socket pair.

    Not multiprocessing's "spawn" start method: that one re-imports the caller's ``__main__``
    module in the child, so a user's script that embeds the Python API without an
    ``if __name__ == "__main__"`` guard would run itself again. Not "fork" either: forking a
    process that holds torch's and the web server's threads is unsafe.
    """

    def __init__(self, factory: Factory) -> None:
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "rag.generation.worker", str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.pid = self._popen.pid
        # The child finds what the factory names where this process does (as spawn does).
        self.conn.send(list(sys.path))
        self.conn.send(factory)

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()


class WorkerGenerator(Generator):
    """A ``Generator`` whose engine runs in a child process that is restarted when it dies."""

    def __init__(
        self,
        factory: Factory,
        *,
        name: str = "worker",
        load_timeout_s: float = 300.0,
        backoff_s: tuple[float, float] = (1.0, 60.0),
        failed_after: int = 5,
    ) -> None:
        self.name = name
        self._factory = factory
        self._load_timeout_s = load_timeout_s
        self._backoff = backoff_s
        self._failed_after = failed_after
        self._call_lock = threading.Lock()  # one request on the pipe at a time
        self._cv = threading.Condition(threading.RLock())
        self._state = EngineState("loading", "starting the answer engine")
        self._conn: Connection | None = None
        self._proc: Any = None
        self._ids = itertools.count(1)
        self._closed = False
        self._crashes_in_a_row = 0
        self._next_start = 0.0
        atexit.register(self.close)
        self._supervisor = threading.Thread(target=self._supervise, name="rag-worker", daemon=True)
        self._supervisor.start()

    # --- supervision --------------------------------------------------------------------------
    def _set(self, state: str, detail: str = "", **kw: Any) -> None:
        with self._cv:  # re-entrant use is fine: Condition wraps an RLock
            self._state = EngineState(
                state,  # type: ignore[arg-type]
                detail,
                restarts=kw.get("restarts", self._state.restarts),
                pid=kw.get("pid", self._state.pid),
                info=kw.get("info", self._state.info),
            )
            self._cv.notify_all()

    def _start_child(self) -> None:
        try:
            proc = _ChildProcess(self._factory)
        except (OSError, ValueError) as exc:  # cannot even start a process: say so, retry
            self._set("failed", f"cannot start the model process: {exc}")
            self._proc = None
            with self._cv:
                self._cv.wait_for(lambda: self._closed, timeout=self._backoff[1])
            return
        parent = proc.conn
        with self._cv:
            self._conn, self._proc = parent, proc
        self._set(
            "loading" if self._state.restarts == 0 else "restarting",
            f"loading the model in process {proc.pid}",
            pid=proc.pid,
        )
        # Wait for the child's first word: ready, a load error, or its death.
        deadline = time.monotonic() + self._load_timeout_s
        while not self._closed:
            if parent.poll(0.2):
                try:
                    kind, _, payload = parent.recv()
                except (EOFError, OSError):
                    break
                if kind == "ready":
                    self._crashes_in_a_row = 0
                    self._set("ready", f"model loaded in process {proc.pid}", info=payload)
                    return
                self._crashes_in_a_row = self._failed_after  # a load error will not heal itself
                self._set("failed", f"the model did not load: {payload}")
                return
            if not proc.is_alive():
                break
            if time.monotonic() > deadline:
                proc.kill()
                break
        proc.join(5)

    def _supervise(self) -> None:
        while not self._closed:
            self._start_child()
            proc = self._proc
            if proc is None:
                continue
            # Wait for the child to end (a crash, a kill, or close()).
            while not self._closed and proc.is_alive():
                proc.join(0.5)
            if self._closed:
                return
            reason = _describe_exit(proc.exitcode)
            if self._state.state != "failed":
                self._crashes_in_a_row += 1
            restarts = self._state.restarts + 1
            lo, hi = self._backoff
            delay = min(hi, lo * 2 ** max(0, self._crashes_in_a_row - 1))
            self._next_start = time.monotonic() + delay
            if self._crashes_in_a_row >= self._failed_after:
                state, detail = (
                    "failed",
                    (
                        f"the answer engine {reason}; {self._crashes_in_a_row} failures in a row, "
                        f"next try in {delay:.0f} s. Run `rag doctor` to see why."
                    ),
                )
                if self._state.state == "failed" and self._state.detail.startswith("the model"):
                    detail = f"{self._state.detail}; next try in {delay:.0f} s"
            else:
                state, detail = (
                    "restarting",
                    f"the answer engine {reason}; restarting in {delay:.0f} s",
                )
            log.error("answer engine process %s %s", proc.pid, reason)
            self._set(state, detail, restarts=restarts, pid=None)
            with self._cv:
                self._cv.wait_for(lambda: self._closed, timeout=delay)

    def wait_ready(self, timeout: float) -> EngineState:
        """Block until the engine is ready or failed, or ``timeout`` seconds passed."""
        with self._cv:
            self._cv.wait_for(lambda: self._state.state in ("ready", "failed"), timeout=timeout)
            return self._state

    def state(self) -> EngineState:
        with self._cv:
            return EngineState(**vars(self._state))

    def kill_child(self) -> None:
        """SIGKILL the model process (tests and `rag doctor` use it to exercise recovery)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def close(self) -> None:
        self._closed = True
        with self._cv:
            self._cv.notify_all()
        proc, conn = self._proc, self._conn
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)

    # --- requests -----------------------------------------------------------------------------
    def unavailable(self) -> EngineUnavailable | None:
        st = self.state()
        if st.state == "ready" and self._conn is not None:
            return None
        wait = max(1, round(self._next_start - time.monotonic())) if st.state != "loading" else 5
        return EngineUnavailable(f"the answer engine is {st.state}: {st.detail}", retry_after=wait)

    def _ready_conn(self) -> Connection:
        err = self.unavailable()
        if err is not None or self._conn is None:
            raise err or EngineUnavailable("the answer engine is not connected")
        return self._conn

    def _died(self) -> EngineUnavailable:
        proc = self._proc
        t0 = time.monotonic()
        while proc is not None and proc.exitcode is None and time.monotonic() - t0 < 3:
            proc.join(0.05)  # the supervisor may be reaping it at the same moment
        reason = _describe_exit(proc.exitcode if proc is not None else None)
        with self._cv:
            if self._state.state == "ready":  # say so now; the supervisor restarts it
                self._set("restarting", f"the answer engine {reason}; restarting", pid=None)
        return EngineUnavailable(
            f"the answer engine {reason} while answering; it restarts by itself", retry_after=5
        )

    def _recv(self, conn: Connection, rid: int) -> tuple[str, Any]:
        while True:
            try:
                kind, got, payload = conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            if got == rid:
                return kind, payload

    def _call(self, method: str, **kwargs: Any) -> Any:
        with self._call_lock:
            conn = self._ready_conn()
            rid = next(self._ids)
            try:
                conn.send(("call", rid, (method, kwargs)))
            except (OSError, BrokenPipeError):
                raise self._died() from None
            sent_cancel = False
            while not conn.poll(0.05):
                if not sent_cancel and cancelled():  # the caller went away: tell the child
                    try:
                        conn.send(("cancel", rid, None))
                    except (OSError, BrokenPipeError):
                        raise self._died() from None
                    sent_cancel = True
                proc = self._proc
                if proc is not None and not proc.is_alive():
                    break  # recv below sees the closed pipe
            kind, payload = self._recv(conn, rid)
            if kind == "cancelled":
                raise Cancelled("the generation was stopped: its caller went away")
            if kind == "error":
                raise RuntimeError(f"the answer engine failed: {payload}")
            return payload

    def stream_chat(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float
    ) -> Iterator[str]:
        with self._call_lock:
            conn = self._ready_conn()
            rid = next(self._ids)
            payload = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
            try:
                conn.send(("stream", rid, payload))
            except (OSError, BrokenPipeError):
                raise self._died() from None
            done = False
            try:
                while True:
                    kind, piece = self._recv(conn, rid)
                    if kind == "piece":
                        yield piece
                    elif kind == "end":
                        done = True
                        return
                    else:
                        done = True
                        raise RuntimeError(f"the answer engine failed: {piece}")
            finally:
                if not done:  # closed early: stop the child's generation, wait for its end
                    try:
                        conn.send(("cancel", rid, None))
                        while self._recv(conn, rid)[0] == "piece":
                            pass
                    except (EngineUnavailable, OSError, BrokenPipeError):
                        pass

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        contrast: list[ChatMessage] | None = None,
        alpha: float = 0.0,
    ) -> Completion:
        extra = {"contrast": contrast, "alpha": alpha} if contrast is not None and alpha else {}
        result: Completion = self._call(
            "complete", messages=messages, max_tokens=max_tokens, temperature=temperature,
            **extra,
        )  # fmt: skip
        return result

    def score(self, messages: list[ChatMessage], candidates: list[str]) -> list[list[float]]:
        result: list[list[float]] = self._call("score", messages=messages, candidates=candidates)
        return result

    def prepare_prefixes(
        self, prefixes: list[list[ChatMessage]], *, tails: Sequence[str]
    ) -> StateReport | None:
        result: StateReport | None = self._call(
            "prepare_prefixes", prefixes=prefixes, tails=list(tails)
        )
        return result

    def remember_prefix(self, messages: list[ChatMessage], *, tails: Sequence[str]) -> bool:
        result: bool = self._call("remember_prefix", messages=messages, tails=list(tails))
        return result

    def count_tokens(self, text: str) -> int:
        result: int = self._call("count_tokens", text=text)
        return result


def _main() -> None:
    """Entry of the model process: the socket's descriptor is the only argument."""
    conn = Connection(int(sys.argv[1]))
    try:
        paths = conn.recv()
        sys.path[:0] = [p for p in paths if p not in sys.path]
        factory = conn.recv()
    except (EOFError, OSError):
        return
    except Exception as exc:  # the factory cannot be unpickled here: a load error
        conn.send(("load-error", 0, f"{type(exc).__name__}: {exc}"))
        return
    _child_main(conn, factory)


if __name__ == "__main__":
    _main()
