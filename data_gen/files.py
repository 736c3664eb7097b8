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
import shutil
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".lock"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path to write `path`'s new content to (a file, or a folder the block makes); renamed over
    `path` when the block ends without error (a folder replaces the old one), removed when it fails. Files are
    created with the umask's permissions (readable by everyone under the usual 022)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise


def make_readable(folder: str | os.PathLike) -> None:
    """Every file under `folder` readable by everyone the umask allows (safetensors writes its files 0600)."""
    mode = 0o666 & ~current_umask()
    for file in Path(folder).rglob("*"):
        if file.is_file():
            file.chmod(mode)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def check_output_dir(output_dir: str) -> None:
    """The output folder can be made and written: not a file, under a writable folder."""
    path = Path(output_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--output_dir {output_dir}: {existing} is not writable; give a folder you can write")


class FolderLock:
    """Holds `folder` for this process: `with FolderLock(out): ...`. A second holder is refused at once with a
    message naming the first (pid, host, command, start)."""

    held: set[Path] = set()  # folders this process holds: taking one again (a command inside a command) is a no-op

    def __init__(self, folder: str | os.PathLike):
        self.folder, self.handle = Path(folder).resolve(), None

    def __enter__(self) -> "FolderLock":
        if self.folder in FolderLock.held:
            return self
        self.created = not self.folder.exists()
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
        FolderLock.held.add(self.folder)
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
            FolderLock.held.discard(self.folder)
            if self.created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                shutil.rmtree(self.folder, ignore_errors=True)  # a run that failed before writing leaves nothing


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
