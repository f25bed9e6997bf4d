"""Fetch an official dataset file when it is absent, verifying its published checksum."""

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Union

from bigml_cli.errors import UserError


def file_hash(path: Union[str, Path], algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, checksum: str, algorithm: str, what: str, hint: str) -> Path:
    """Download `url` to `dest` atomically, with a progress bar (size, rate, time left) on a terminal; raise a
    UserError saying where to put the files if offline. A failed download leaves nothing behind, not even
    the folders it made."""
    if os.environ.get("BIGML_OFFLINE"):
        raise UserError(f"{what} not found in {dest.parent} and BIGML_OFFLINE is set; {hint}")
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    done = False
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            copy_with_progress(response, out, int(response.headers.get("Content-Length") or 0), url)
        got = file_hash(tmp, algorithm)
        if got != checksum:
            raise UserError(f"download of {url} has {algorithm} {got}, expected {checksum}; try again later")
        os.replace(tmp, dest)
        done = True
    except OSError as e:
        raise UserError(f"{what} not found in {dest.parent} and downloading {url} failed ({e}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        for folder in made if not done else ():  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
    return dest


def copy_with_progress(response: Any, out: Union[str, Path], total: int, url: str) -> None:
    """Copy the response to `out`; a line on stderr says what is downloading, and a terminal gets a bar."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    size = f" ({total / 1e6:,.1f} MB)" if total else ""
    console.print(f"downloading {url}{size}", markup=False, highlight=False)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("download", total=total or None)
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            bar.advance(task, len(block))
