"""One exception type for every error a user can fix (bad input, missing data, offline weights)."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable


class DefectkitError(Exception):
    """A user-facing error: its message is one line that names the file and the problem.

    Every console script catches it, prints ``error: <message>`` to stderr and exits with status 2,
    so a bad input never ends in a traceback.
    """


class Terminated(BaseException):
    """SIGTERM (``timeout``, ``docker stop``, a job scheduler) as an exception: like Ctrl-C, it unwinds
    the stack, so atomic outputs remove their temporary folders instead of leaving them behind."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def install_sigterm_handler() -> None:
    """Turn SIGTERM into :class:`Terminated` in the main thread (where Python delivers signals);
    elsewhere, or where the user installed a handler of their own, leave it alone."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _raise_terminated)


def cli_entry(func: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script ``main`` so DefectkitError and Ctrl-C end with a one-line message (and
    a closed output pipe ends quietly).

    >>> @cli_entry
    ... def main(argv=None):
    ...     raise DefectkitError("x.png: not an image")
    >>> main()  # doctest: +SKIP

    prints ``error: x.png: not an image`` to stderr and exits with status 2 (not run here: the wrapper
    also installs a SIGTERM handler in the calling process).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        install_sigterm_handler()
        try:
            code = func(*args, **kwargs)
        except DefectkitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except Terminated:
            print("terminated", file=sys.stderr)
            raise SystemExit(143) from None
        except BrokenPipeError:
            # The reader went away (`convert-mvtec ... | head`): stop quietly, as a SIGPIPE'd
            # program does, instead of a traceback (and another one when Python flushes stdout).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        return 0 if code is None else int(code)

    return wrapper
