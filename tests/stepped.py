"""``oebench`` runs that stop at named steps, so that a test kills or interrupts a run at a
state it has seen, never after a guessed delay.

Run as a script, this file is the ``oebench`` CLI with hooks: at each step named in
``$OEBENCH_TEST_STEPS`` (comma-separated) the child writes ``@step <name> <detail>`` on
stderr and waits for one line on stdin: ``go`` runs on to the next step, ``free`` runs on
without stopping again. A signal the parent sends while the child waits lands right there
(a SIGINT that arrives just before the child starts waiting is not lost: it is handled when
the parent closes stdin, see ``_wait``).

The steps:

- ``plugins``: ``main()`` is about to load the plugins;
- ``preamble``: ``oebench run`` checks its output options (before it reads the benchmark);
- ``benchmark``: ``oebench run`` is about to read the benchmark file;
- ``torch``: torch is about to be imported, the first time;
- ``step``: a progress bar has advanced (a training step, a batch of forward passes, a
  cell); the detail is ``<bar> | <status>``;
- ``commit``: a cell's score array is being written, inside the store's transaction (a Ctrl-C
  is held there until the commit: use SIGKILL);
- ``stored``: a cell has just been committed to the store; the detail is its label.

In a test, ``SteppedRun`` starts the child and reads its steps; ``wait_line`` waits for any
line of its stderr (which its worker processes share), such as one a test plugin writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

STEPS_VARIABLE = "OEBENCH_TEST_STEPS"
MARK = "@step "
STEPS = ("plugins", "preamble", "benchmark", "torch", "step", "commit", "stored")


# -- the parent ------------------------------------------------------------------------------
class SteppedRun:
    """The ``oebench`` CLI in a child process that stops at ``steps`` (see the module doc)."""

    def __init__(
        self,
        args: Sequence[str],
        steps: Sequence[str],
        env: dict[str, str] | None = None,
        stdout: Any = subprocess.DEVNULL,
        terminal_sigint: bool = False,
    ):
        unknown = set(steps) - set(STEPS)
        assert not unknown, f"unknown steps {sorted(unknown)}; known: {STEPS}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            env={**os.environ, **(env or {}), STEPS_VARIABLE: ",".join(steps)},
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as in a terminal (a test runner may start children ignoring SIGINT)
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            if terminal_sigint
            else None,
        )
        #: every line of the child's stderr so far, its steps included
        self.lines: list[str] = []
        self._read_to = 0  # lines before this one were looked at by next_step or wait_line
        self._ended = False
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._arrived:
                self.lines.append(line)
                self._arrived.notify_all()
        with self._arrived:
            self._ended = True  # stderr closed: the child (and every process it made) ended
            self._arrived.notify_all()

    def wait_line(self, wanted: Callable[[str], bool], timeout: float = 300) -> str | None:
        """The next stderr line that ``wanted`` accepts (None once stderr ended without one)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                while self._read_to < len(self.lines):
                    line = self.lines[self._read_to]
                    self._read_to += 1
                    if wanted(line):
                        return line
                if self._ended:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no such line within {timeout} s; stderr so far:\n{self.stderr[-3000:]}"
                    )
                self._arrived.wait(left)

    def next_step(self, timeout: float = 300) -> str | None:
        """The step the child now waits at (``"stored mnist-5k / ..."``), None once it ended."""
        line = self.wait_line(lambda line: line.startswith(MARK), timeout)
        return None if line is None else line[len(MARK) :].strip()

    def until(self, wanted: Callable[[str], bool], timeout: float = 300) -> str:
        """Let the child run on, step by step, until it waits at a step ``wanted`` accepts."""
        while True:
            step = self.next_step(timeout)
            if step is None:
                raise AssertionError(f"the run ended before the step; stderr:\n{self.stderr}")
            if wanted(step):
                return step
            self.go()

    def go(self) -> None:
        """Let the child run on to its next step."""
        self._say("go")

    def free(self) -> None:
        """Let the child run on without stopping again."""
        self._say("free")

    def _say(self, word: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # the child has ended: the next step says so
            pass

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        """Close the child's stdin (it runs on from any step), wait for it: (status, stderr)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout)
        return self.proc.returncode, self.stderr

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


# -- the child ---------------------------------------------------------------------------------
_ON: set[str] = set()
_FREE = False


def _wait(name: str, detail: str = "") -> None:
    """Say that the run is at step ``name`` and wait for the parent's word (or signal)."""
    global _FREE
    if _FREE or name not in _ON:
        return
    os.write(2, f"{MARK}{name} {detail}".rstrip().encode() + b"\n")
    line = sys.stdin.readline()  # a SIGINT now raises KeyboardInterrupt from here
    if line == "go\n":
        return
    _FREE = True  # "free", or stdin closed: no more stops
    if line != "free\n":
        # stdin closed: a SIGINT the parent sent just before the read began is pending;
        # pthread_sigmask runs pending handlers at once (Python's raises KeyboardInterrupt)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])


def _once(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, stopping at step ``name`` before its first call."""
    calls: list[int] = []

    def stopped(*args: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append(1)
            _wait(name)
        return real(*args, **kwargs)

    return stopped


class _TorchImport:
    """A meta-path finder that stops at step ``torch`` when torch is first imported (it stays
    in ``sys.meta_path``, which the import system is iterating over, and finds nothing)."""

    def __init__(self) -> None:
        self.seen = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == "torch" and not self.seen:
            self.seen = True
            _wait("torch")
        return None  # the usual finders import it


def _install() -> None:
    import oebench.bench.parse
    import oebench.core.files
    import oebench.core.progress
    import oebench.record.recorder
    import oebench.record.store
    import oebench.registry.plugins

    plugins = oebench.registry.plugins
    plugins.get_plugin_manager = _once("plugins", plugins.get_plugin_manager)
    files = oebench.core.files
    files.check_output_file = _once("preamble", files.check_output_file)
    parse = oebench.bench.parse
    parse.load_benchmark = _once("benchmark", parse.load_benchmark)
    if "torch" not in sys.modules:
        sys.meta_path.insert(0, _TorchImport())

    bars = oebench.core.progress.RichProgress
    start = bars.start

    def stepped_start(self: Any, description: str, total: int) -> Callable[..., None]:
        advance = start(self, description, total)

        def stepped(steps: int = 1, status: str = "") -> None:
            advance(steps, status)
            _wait("step", f"{description} | {status}")

        return stepped

    bars.start = stepped_start

    store = oebench.record.store
    encode = store.encode_scores

    def encode_in_transaction(scores: Any) -> Any:
        _wait("commit")
        return encode(scores)

    store.encode_scores = encode_in_transaction

    recorder = oebench.record.recorder.Recorder
    record = recorder.record

    def recorded(self: Any, task: Any, result: Any) -> None:
        record(self, task, result)
        if result.rows:
            _wait("stored", task.label)

    recorder.record = recorded


if __name__ == "__main__":
    _ON.update(s for s in os.environ.get(STEPS_VARIABLE, "").split(",") if s)
    _install()
    from oebench.cli import main

    main()
