"""Atomic file writes: a reader sees the old file or the new one, never half of either.

New files get the mode any other new file gets (0666 less the umask), not
the 0600 of `tempfile.mkstemp`: reports, bundles and sites are read by
artefact uploads and web servers.
"""

import contextlib
import os
import secrets
import signal
import tempfile
import threading
from pathlib import Path


def write_atomic(path, data):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def honour_umask(path) -> None:
    """Give ``path`` the mode a new file gets (0666 less the umask), as for a file its writer made 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def folder_problem(path) -> str | None:
    """Why files cannot be written into the folder ``path`` (made when missing), as a phrase; None when they can."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"is under the file {existing}"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"cannot be written: {existing}: {exc.strerror or type(exc).__name__}"
    return None


def replace_files(documents):
    """Replace a set of files (``{path: str or bytes}``) so that a reader never sees old and new mixed.

    Every new file is written and synced to a temporary file beside its target
    first; then the old files are removed and the new ones renamed into place
    with SIGINT and SIGTERM held back, so only SIGKILL or a power cut can stop
    the swap halfway, and that leaves some of the new files and none of the old;
    a swap that fails (an OSError) leaves none.
    Temporary files that an earlier killed write of these files left behind are
    removed first (a set such as the report files has one writer at a time).
    """
    targets = {Path(path): data for path, data in documents.items()}
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
    temps = {}
    try:
        for path, data in targets.items():
            temps[path] = _write_temp(path, data)
    except BaseException:
        _unlink(temps.values())
        raise
    with _signals_held():
        try:
            for path in targets:
                path.unlink(missing_ok=True)
            for path, tmp in temps.items():
                os.replace(tmp, path)
        except BaseException:  # a swap that fails halfway leaves neither set
            _unlink([*targets, *temps.values()])
            raise


def remove_files(paths) -> None:
    """Remove ``paths`` (files; missing or unreachable ones are fine) and temporary files left beside them."""
    for path in map(Path, paths):
        remove_stale_temps(path)
        if not path.is_dir():
            _unlink([path])


def _unlink(paths) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            Path(path).unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` that were killed before their rename."""
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _write_temp(path: Path, data) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, created with mode 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


@contextlib.contextmanager
def _signals_held():
    """Defer SIGINT and SIGTERM to the end of the block, then deliver them (main thread only).

    A handler, not a signal mask: a mask is per thread, and the kernel hands a
    signal to any thread that does not block it (torch and BLAS start many).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in caught:
            signal.raise_signal(signum)
