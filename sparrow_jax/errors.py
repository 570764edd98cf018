"""User mistakes versus internal errors, and the one top-level handler every command line uses.

A mistake a user can fix (a missing or damaged file, a bad argument, a config that does not match its
weights) is raised as a `ValueError` (`UserError`, `ConfigError`, ...) or an `OSError` naming the file, with
a message that names the argument or file and the fix. `run_cli` prints it as one line, `error: ...`, and
exits 2; `--debug` shows the traceback too. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import traceback
from typing import Callable

EXIT_USAGE = 2


class UserError(ValueError):
    """A mistake in the user's arguments, files or data; the message says what and how to fix it."""


def is_user_error(e: BaseException, extra: tuple = ()) -> bool:
    """Whether `e` reports a user's mistake: a ValueError (a bad value, invalid JSON, a mismatch), or an
    OSError from the file system (missing file, no permission, read-only, not a directory, ...)."""
    if isinstance(e, extra):
        return True
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                      PermissionError)):
        return True
    return isinstance(e, OSError) and e.errno is not None  # read-only file system, disk full, ...


def one_line(e: BaseException) -> str:
    """The exception's message on one line (OSErrors include the file they name)."""
    text = str(e)
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]  # str(KeyError) quotes its message
    return " ".join(text.split()) or type(e).__name__


def run_cli(fn: Callable[[], int], debug: bool = False, extra: tuple = ()) -> int:
    """`fn()`'s exit code; a user error (see `is_user_error`; `extra`: more exception types a command
    counts as such) prints `error: <one line>` on stderr and returns 2, with the traceback when `debug`.
    Ctrl-C returns 130; other exceptions propagate (their traceback is the bug report)."""
    try:
        return fn()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - filtered just below
        if not is_user_error(e, extra):
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
