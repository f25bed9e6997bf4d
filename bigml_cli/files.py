"""Writing files so that nothing is lost: every file bigml writes goes to a temporary name beside it and is
renamed into place once whole, so the last good copy survives a full or read-only disk, a crash or a signal.
A full, read-only or forbidden disk becomes a DiskError: one line naming the path and what to do."""

import contextlib
import csv
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

from bigml_cli.errors import UserError

# What to do about each errno a disk can answer with (the message carries the path and, for training, --resume).
DISK_ADVICE = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space"),
    errno.EROFS: ("the disk is read-only", "pick a path on a writable disk"),
    errno.EACCES: ("permission denied", "pick a path you may write to, or change its permissions"),
    errno.EPERM: ("permission denied", "pick a path you may write to, or change its permissions"),
}
# The same errors as TensorFlow and h5py report them: in the message only, without an errno.
DISK_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
}


class DiskError(UserError):
    """A write that the disk refused (full, read-only, no permission): nothing partial was left behind.
    `then`: what to run once the disk is fixed."""

    def __init__(self, path, what: str, advice: str, then: str = "run it again"):
        self.path, self.what, self.advice = path, what, advice
        super().__init__(f"cannot write {path}: {what}; {advice}, then {then}")

    def with_then(self, then: str) -> "DiskError":
        """The same error with other advice for after the fix (e.g. the command that resumes a run)."""
        return DiskError(self.path, self.what, self.advice, then)


def disk_errno(exc: BaseException) -> Optional[int]:
    """The disk errno behind `exc` (an OSError, or a TensorFlow or h5py error quoting it), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:  # the errno may sit on a cause a library wrapped
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ADVICE:
            return exc.errno
        text = str(exc)
        for message, number in DISK_MESSAGES.items():
            if message in text:
                return number
        exc = exc.__cause__ or exc.__context__
    return None


def disk_error(exc: BaseException, path: Union[str, Path]) -> Optional[DiskError]:
    """A DiskError for `exc` raised while writing `path`, or None when `exc` is not a disk's refusal."""
    if isinstance(exc, DiskError):
        return exc
    number = disk_errno(exc)
    if number is None:
        return None
    return DiskError(path, *DISK_ADVICE[number])


def partial_name(path: Path) -> Path:
    """The temporary name a file or folder is written under before it is renamed to `path`: hidden, in the
    same folder (so the rename is atomic), and with the same ending (Keras checks `.weights.h5`, `.keras`)."""
    return path.with_name(f".partial.{path.name}")


def remove(path: Path) -> None:
    """Delete a file or folder if it is there (a partial write's leftovers); best effort, as it runs while
    another error is on its way (on a read-only disk even deleting a missing file fails)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yields the temporary path to write `path`'s content to (a file or a folder); renames it to `path` when
    the block ends, replacing what was there. On any error the temporary one is deleted and `path` keeps its
    last good content; a full or read-only disk raises DiskError naming `path`."""
    path = Path(path)
    tmp = partial_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
        yield tmp
        if tmp.is_dir() and path.is_dir():  # folders cannot be replaced in one rename: old one out first
            old = path.with_name(f".{path.name}.old")
            remove(old)
            path.rename(old)
            tmp.rename(path)
            remove(old)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        remove(tmp)
        error = disk_error(e, path)
        if error is not None:
            raise error from None
        raise


def write_text(path: Union[str, Path], text: str) -> None:
    """`path` holds `text` (UTF-8), whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_with(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the content; it lands at `path` whole or not at all."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_csv(path: Union[str, Path], rows: Iterable[Sequence]) -> None:
    """`rows` as a CSV file at `path`, whole or not at all."""
    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    write_with(path, write)


def memory_dir() -> Optional[str]:
    """A RAM-backed folder for staging files (/dev/shm), or None for the system's temporary folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def write_staged(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """`write(name)` writes a file that a library opens itself (Keras' .weights.h5 and .keras): first in memory,
    then copied to `path` whole or not at all. h5py, when the disk fills under it, can crash the process as it
    frees the failed file (a segmentation fault, not an exception); a plain copy fails cleanly. When memory has
    no room (a container's small /dev/shm), the file is staged beside `path` instead."""
    path = Path(path)
    places = [memory_dir(), str(path.parent)]
    for place in places:
        try:
            scratch = tempfile.mkdtemp(prefix=".bigml-staging-", dir=place)
        except OSError as e:
            if place != places[-1]:
                continue
            raise disk_error(e, path) or e
        try:
            staged = os.path.join(scratch, path.name)
            try:
                write(staged)
            except Exception as e:
                if place != places[-1] and disk_errno(e) is not None:
                    continue  # no room to stage in memory: beside the target
                error = disk_error(e, path)
                if error is None:
                    raise
                raise error from None
            with atomic_path(path) as tmp:
                shutil.copyfile(staged, tmp)
            return
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
