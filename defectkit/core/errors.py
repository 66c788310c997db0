"""One exception type for every error a user can fix (bad input, missing data, offline weights)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable


class DefectkitError(Exception):
    """A user-facing error: its message is one line that names the file and the problem.

    Every console script catches it, prints ``error: <message>`` to stderr and exits with status 2,
    so a bad input never ends in a traceback.
    """


def cli_entry(func: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script ``main`` so DefectkitError and Ctrl-C end with a one-line message (and
    a closed output pipe ends quietly).

    >>> @cli_entry
    ... def main(argv=None):
    ...     raise DefectkitError("x.png: not an image")
    >>> main()  # doctest: +SKIP  (prints "error: x.png: not an image", exits 2)
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = func(*args, **kwargs)
        except DefectkitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except BrokenPipeError:
            # The reader went away (`convert-mvtec ... | head`): stop quietly, as a SIGPIPE'd
            # program does, instead of a traceback (and another one when Python flushes stdout).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        return 0 if code is None else int(code)

    return wrapper
