# Copyright 2026 The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Output directories that appear whole or not at all: every command and API that writes a checkpoint directory
(`convert`, `derive`, `search`, export) writes it through `staged_output_directory`.

The directory is written under a hidden staging name beside the destination, on the same file system, and renamed
to the destination at the end (a rename within one file system is atomic), so a reader never sees a half-written
checkpoint and a failure leaves nothing at the destination. The staging name holds the host and process id of its
writer: a run killed with SIGKILL cannot clean up after itself, so the next run for the same destination recognises
its staging directory as stale (the process no longer runs) and removes it. Python exceptions, Ctrl-C
(`KeyboardInterrupt`), `SystemExit`, SIGTERM and SIGHUP (turned into `SystemExit` while the directory is staged)
remove the staging directory. OS errors (read-only file system, no space left, permission denied) become one
`OutputDirectoryError` naming the destination, the failing path and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from ..utils import logging


logger = logging.get_logger(__name__)

__all__ = ["OutputDirectoryError", "check_destination", "staged_output_directory"]

STAGING_MARKER = "partial"

# Signals whose default action ends the process without running Python's clean-up. While a directory is staged they
# raise `SystemExit(128 + signal)` instead (the exit status a shell reports for a process killed by that signal), so
# the staging directory is removed and the process still ends.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class OutputDirectoryError(ValueError):
    """The output directory cannot be written (taken, parent missing or not writable, disk full, ...); nothing was
    left at the destination. The command line prints it as one line."""


@contextlib.contextmanager
def staged_output_directory(destination: str | os.PathLike, *, what: str = "output") -> Iterator[Path]:
    """Yields an empty staging directory to write `destination`'s content into, and renames it to `destination` when
    the block ends without an exception.

    Args:
        destination: the directory to create; it must not exist, and its parent must be a writable directory.
        what: what is written, for messages ("converted checkpoint").

    Raises:
        OutputDirectoryError: before anything is written, when `destination` exists, its parent is missing or not a
            writable directory, or another process is writing it; afterwards for any OS error in the block or while
            renaming. Other exceptions of the block propagate unchanged. In every case the staging directory is
            removed and nothing is left at `destination`.
    """
    destination = Path(destination)
    check_destination(destination, what=what)
    _remove_stale_staging(destination, what)
    staging = destination.parent / f".{destination.name}.{STAGING_MARKER}.{_writer_id()}.{secrets.token_hex(4)}"
    try:
        # `os.mkdir` applies the umask to 0o777: the user's usual permissions (`tempfile.mkdtemp` would give 0o700).
        os.mkdir(staging)
    except OSError as error:
        raise _os_error(destination, what, error) from error
    try:
        with _signals_raise_system_exit():
            yield staging
            if os.path.lexists(destination):  # created by someone else meanwhile; a rename would replace it if empty
                raise OutputDirectoryError(
                    f"{destination} appeared while the {what} was written; nothing was changed."
                )
            os.rename(staging, destination)
    except OSError as error:
        _remove(staging)
        raise _os_error(destination, what, error) from error
    except BaseException:
        _remove(staging)
        raise


def check_destination(destination: str | os.PathLike, *, what: str = "output") -> None:
    """The checks `staged_output_directory` makes before anything is written, for callers that want to fail before
    long work such as reading a source (raises `OutputDirectoryError`)."""
    destination = Path(destination)
    if os.path.lexists(destination):
        raise OutputDirectoryError(
            f"{destination} already exists; give a directory that does not exist yet for the {what}."
        )
    parent = destination.parent
    if not parent.is_dir():
        ancestor = parent
        while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if os.path.lexists(ancestor) and not ancestor.is_dir():
            raise OutputDirectoryError(
                f"Cannot create {destination}: {ancestor} is a file, not a directory; choose another destination."
            )
        raise OutputDirectoryError(f"Cannot create {destination}: {parent} does not exist; create it first.")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "is on a read-only file system" if _is_read_only(parent) else "is not writable by this user"
        raise OutputDirectoryError(f"Cannot create {destination}: {parent} {reason}; choose another destination.")


def _is_read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # statvfs is POSIX-only
        return False


def _writer_id() -> str:
    """`host.pid` of this process: the host, so that a process on another machine sharing the file system is never
    taken for a dead local one."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"
    return f"{host}.{os.getpid()}"


def _remove_stale_staging(destination: Path, what: str) -> None:
    """Removes staging directories of `destination` left by dead processes of this host (a SIGKILL, a power loss),
    and refuses while one of a process that may still run exists (it is writing the same destination)."""
    pattern = re.compile(
        rf"\.{re.escape(destination.name)}\.{STAGING_MARKER}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}"
    )
    host = _writer_id().rsplit(".", 1)[0]
    for path in sorted(destination.parent.glob(f".{glob.escape(destination.name)}.{STAGING_MARKER}.*")):
        match = pattern.fullmatch(path.name)
        if match is None or not path.is_dir():
            continue
        pid = int(match["pid"])
        if match["host"] == host and not _process_runs(pid):
            _remove(path)
            if os.path.lexists(path):
                logger.warning(f"Could not remove {path}, left by process {pid} that no longer runs; remove it.")
            else:
                logger.warning(f"Removed {path}: a {what} left half-written by process {pid}, which no longer runs.")
            continue
        where = "on this machine" if match["host"] == host else f"on host {match['host']}"
        raise OutputDirectoryError(
            f"{path} shows that process {pid} {where} is writing {destination}; wait for it to finish, or remove "
            f"{path} if that process no longer runs."
        )


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _os_error(destination: Path, what: str, error: OSError) -> OutputDirectoryError:
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EDQUOT: "disk quota exceeded",
    }
    reason = reasons.get(error.errno, error.strerror or str(error))
    at = f" ({error.filename})" if error.filename else ""
    return OutputDirectoryError(
        f"Writing the {what} to {destination} failed: {reason}{at}. Nothing was left at {destination}."
    )


@contextlib.contextmanager
def _signals_raise_system_exit() -> Iterator[None]:
    """Makes SIGTERM and SIGHUP raise `SystemExit` in the main thread while the block runs, where they still have
    their default action (which would end the process without clean-up). Elsewhere (another thread, a handler set by
    the application) they are left alone."""
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for signum in TERMINATING_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                installed[signum] = signal.signal(signum, _raise_system_exit)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
