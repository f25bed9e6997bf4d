"""Fetch an official dataset file when it is absent, verifying its published checksum."""

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from bigml_cli.errors import UserError


def file_hash(path, algorithm):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url, dest: Path, checksum: str, algorithm: str, what: str, hint: str):
    """Download `url` to `dest` atomically; raise a UserError saying where to put the files if offline."""
    if os.environ.get("BIGML_OFFLINE"):
        raise UserError(f"{what} not found in {dest.parent} and BIGML_OFFLINE is set; {hint}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            shutil.copyfileobj(response, out)
        got = file_hash(tmp, algorithm)
        if got != checksum:
            raise UserError(f"download of {url} has {algorithm} {got}, expected {checksum}; try again later")
        os.replace(tmp, dest)
    except OSError as e:
        raise UserError(f"{what} not found in {dest.parent} and downloading {url} failed ({e}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
