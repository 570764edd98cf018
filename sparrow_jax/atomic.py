"""Writing a directory whole: a reader, or a kill at any moment, finds the old directory or the new one.

    with atomic.replacing("ckpt/llava", overwrite=True) as tmp:
        ...  # write everything into tmp
    # ckpt/llava is now the new directory; the old one is gone

The new content goes to a sibling `<name>.tmp-<pid>`; once the block has finished it is fsynced and swapped
in. On Linux the swap is one atomic exchange of the two directories (renameat2 RENAME_EXCHANGE), so a
complete directory always exists under the name. Elsewhere it is two renames (old to `<name>.old-<pid>`,
new into place); a kill between them leaves the name missing for a moment, and `recover` (called by the
next write and by `sparrow_jax.checkpoint.load`) puts the new one in place. Leftovers of killed writes
are removed by the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import time
from pathlib import Path

TMP, OLD = "tmp", "old"
# Tests only: a write stops (sleeps) at the named point, after printing "paused at POINT" to stderr, so that a
# test can kill it exactly there. Points: "params" (sparrow_jax.checkpoint.save: the new parameters written,
# not yet the config and tokenizer), "written" (new directory complete, not swapped in), "aside" (the
# two-rename fallback: old moved aside, new not yet in place), "swapped" (new in place, old not yet removed).
PAUSE_ENV = "SPARROW_JAX_TEST_PAUSE"


@contextlib.contextmanager
def replacing(directory, overwrite: bool = False, markers: tuple[str, ...] = (), token: str | None = None,
              primary: bool = True, sync=None):
    """Yield an empty temporary directory beside `directory`; when the block completes it replaces
    `directory` (if the block raises, it is removed and `directory` is untouched).

    An existing non-empty `directory` is an error unless `overwrite`, and even then unless it holds one of
    `markers` (so that a mistyped destination full of other files is never replaced). Several processes
    writing one directory together pass the same `token`, `primary` (True on exactly one of them, which
    does the file system work) and `sync(name)`, a barrier."""
    directory = Path(directory).absolute()
    token = token or str(os.getpid())
    sync = sync or (lambda name: None)
    tmp = _sibling(directory, TMP, token)
    if primary:
        recover(directory)
        _remove_leftovers(directory)
    sync(f"atomic-checked:{directory}")
    _check(directory, overwrite, markers)
    if primary:
        tmp.mkdir(parents=True)
    sync(f"atomic-started:{directory}")
    try:
        yield tmp
    except BaseException:
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    sync(f"atomic-written:{directory}")
    if primary:
        _fsync_tree(tmp)
        pause("written")
        _swap(tmp, directory, token)
    sync(f"atomic-swapped:{directory}")


def recover(directory) -> None:
    """Close the gap a kill between the two renames of the fallback swap leaves (`directory` missing, its
    `.old-T` and complete `.tmp-T` beside it): the new directory goes into place. No-op otherwise."""
    directory = Path(directory).absolute()
    if directory.exists():
        return
    for old in _siblings(directory, OLD):
        new = _sibling(directory, TMP, old.name.rsplit("-", 1)[1])
        # The old directory is moved aside only once the new one is complete.
        os.rename(new if new.is_dir() else old, directory)
        return


def pause(point: str) -> None:
    """The test hook (see PAUSE_ENV)."""
    if os.environ.get(PAUSE_ENV) == point:
        print(f"paused at {point}", file=sys.stderr, flush=True)
        time.sleep(600)


def _sibling(directory: Path, kind: str, token: str) -> Path:
    return directory.with_name(f"{directory.name}.{kind}-{token}")


def _siblings(directory: Path, kind: str) -> list[Path]:
    prefix = f"{directory.name}.{kind}-"
    if not directory.parent.is_dir():
        return []
    return sorted(p for p in directory.parent.iterdir() if p.name.startswith(prefix))


def _remove_leftovers(directory: Path) -> None:
    """Siblings left by killed writes (their process is gone); a live concurrent writer's are kept."""
    for path in _siblings(directory, TMP) + _siblings(directory, OLD):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _check(directory: Path, overwrite: bool, markers: tuple[str, ...]) -> None:
    if not directory.exists():
        return
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} exists and is not a directory; choose another --dst")
    if not any(directory.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{directory} already exists and is not empty; choose an empty --dst or pass "
                              "--overwrite to replace it")
    if markers and not any((directory / m).exists() for m in markers):
        raise FileExistsError(f"{directory} holds no {' or '.join(markers)}, so it is not a checkpoint: refusing "
                              "to replace it (and the other files there); choose another --dst")


def _swap(new: Path, directory: Path, token: str) -> None:
    if not directory.exists():
        os.rename(new, directory)
    elif _exchange(new, directory):
        pause("swapped")
        shutil.rmtree(new)  # now the old directory
    else:
        old = _sibling(directory, OLD, token)
        os.rename(directory, old)
        pause("aside")
        os.rename(new, directory)
        pause("swapped")
        shutil.rmtree(old)
    _fsync(directory.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories `a` and `b` in one atomic step (Linux renameat2); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a libc without it
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under `root` to disk, so the swap never publishes unwritten data."""
    for parent, _, files in os.walk(root):
        for name in files:
            _fsync(Path(parent) / name)
        _fsync(Path(parent))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
