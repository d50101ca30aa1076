"""The CLI's exit once torch is loaded: the same status and output, without module teardown."""

import subprocess
import sys
import textwrap


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_status_output_and_atexit_handlers_survive_the_fast_exit():
    out = _python(
        """
        import atexit, sys, torch
        from oebench.cli.app import _exit
        atexit.register(lambda: print("atexit ran"))
        print("result", end=" ")
        sys.stderr.write("note")
        _exit(3)
        """
    )
    assert (out.returncode, out.stdout, out.stderr) == (3, "result atexit ran\n", "note")


def test_a_message_as_exit_code_goes_to_stderr_with_status_1():
    out = _python("import torch\nfrom oebench.cli.app import _exit\n_exit('Error: bad input')")
    assert (out.returncode, out.stderr.strip()) == (1, "Error: bad input")


def test_other_threads_are_joined_by_the_normal_exit():
    # a non-daemon thread still writing must finish, as with sys.exit. It waits for the main
    # thread to end, which happens only in the interpreter's normal shutdown (that then joins
    # it): so it is alive whenever _exit looks, and a fast exit would cut it off unprinted
    out = _python(
        """
        import threading, torch
        from oebench.cli.app import _exit
        def late():
            threading.main_thread().join()
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        _exit(0)
        """
    )
    assert (out.returncode, out.stdout) == (0, "thread finished\n")
