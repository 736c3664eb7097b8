"""Files a crash cannot leave half-written, and output folders one run holds at a time.

Every JSON, text and table is written to a temporary file beside its destination and renamed over it: a kill or a
full disk leaves the old file or none, and the temporary is removed when the write fails. A run takes its output
folder's lock (`.lock`, an OS file lock, released by the OS when the process dies) and a second run is refused
with the holder's pid and command.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".lock"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path to write `path`'s new content to; renamed over `path` when the block ends without error,
    removed when it fails. Created with the umask's permissions (readable by everyone under the usual 022)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, **kwargs) -> Path:
    """JSON, atomically; numpy numbers become floats."""
    return write_text(path, json.dumps(obj, indent=2, default=float, **kwargs))


def write_parquet(df, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read_json(path: str | os.PathLike, fix: str = "delete it and re-run") -> dict:
    """A JSON file the program wrote; a damaged one is an error that names it and the fix."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"{path} is damaged ({e}); {fix}") from e


class FolderLock:
    """Holds `folder` for this process: `with FolderLock(out): ...`. A second holder is refused at once with a
    message naming the first (pid, host, command, start)."""

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder, self.what, self.handle = Path(folder), what, None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ValueError(f"{self.folder} is in use by {holder}; wait for it to finish or use another "
                             f"--output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                     f"({' '.join(sys.argv)[:200]})")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
