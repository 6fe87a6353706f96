"""Files and locks: the one place where the project writes a file or takes an output folder.

* :func:`atomic_write`: every file the project writes is written to a temporary file beside it and renamed
  over the target, so an interrupted run never leaves half a file.
* :class:`OutputLock`: one run per output folder; a lock file names its owner (pid, host), and a lock whose
  owner died is taken over, with the temporary files that killed runs left there.
* :func:`give_umask_mode`: the mode an ordinary new file gets, for files that libraries write private.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from brat_ner.cli import UsageError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# atomic_write's temporary files: "." + the target's name + "." + mkstemp's 8 random characters + ".tmp".
TEMPORARY_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def atomic_write(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, nothing translated) to ``path`` all at once: into a hidden temporary
    file in the same folder, then renamed over ``path``. A crash leaves the old file or the new one, never half
    of one; the hidden leftover of a crash is no document to brat or to the corpus reader."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        give_umask_mode(temporary)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def give_umask_mode(path: str | Path) -> None:
    """Give ``path`` the mode of an ordinary new file under the current umask (0644 under umask 022): files that
    are written private (mkstemp's, safetensors' ``save_file``) would be unreadable to a serving process."""
    os.chmod(path, 0o666 & ~umask())


def remove_stale_temporary_files(folder: Path) -> None:
    """Delete the temporary files of :func:`atomic_write` in ``folder``, left by runs killed while writing. Only
    for the holder of ``folder``'s lock: no live run writes there then."""
    stale = [path for path in folder.iterdir() if path.is_file() and TEMPORARY_FILE.match(path.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.warning("Deleted %d temporary files left in %s by an interrupted run: %s", len(stale), folder,
                       ", ".join(sorted(path.name for path in stale)))


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` if needed and write a file there, so an output that cannot be written fails now, not
    after the work (``os.access`` would not do: it says yes to root on a read-only folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"{option} {folder}: cannot write there ({error.strerror or error})") from None


# ----- one run per output folder -----


class OutputLock:
    """``<folder>/run.lock``, holding the owner's pid and host, while a run writes ``folder``.

    The lock file is written complete under a temporary name and hard-linked into place, which fails when a lock
    exists: so two runs cannot both take it, and a lock is never seen half-written. A lock left by a process
    that is gone (same host, dead pid: a killed run) is taken over with a warning. Its holder is the only run
    writing the folder, so the temporary files there are stale ones of killed runs: they are deleted. Released
    at exit; a folder the run created and left empty (it stopped before writing anything) is removed with it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
        self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{LOCK_NAME}.")
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(self.owner, file)
        try:
            for _ in range(2):  # a second try after removing a dead owner's lock
                try:
                    self._put_in_place(temporary)
                    break
                except FileExistsError:
                    self._remove_stale_lock()
            else:
                raise UsageError(f"{self.path} was taken again while a stale lock was removed; try again")
        finally:
            os.unlink(temporary)
        atexit.register(self.release)
        remove_stale_temporary_files(self.folder)

    def _put_in_place(self, temporary: str) -> None:
        """The lock file, complete, at ``self.path``; ``FileExistsError`` when a lock is there."""
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: create exclusively, then write
            with open(self.path, "x", encoding="utf-8") as file:
                json.dump(self.owner, file)

    def _remove_stale_lock(self) -> None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return  # released meanwhile
        except ValueError:
            owner = {}
        pid, host = owner.get("pid"), owner.get("host")
        if host == socket.gethostname() and pid == os.getpid():
            self.path.unlink(missing_ok=True)  # this process's own, not yet released (a command run in-process again)
            return
        if host == socket.gethostname() and isinstance(pid, int) and not _process_alive(pid):
            logger.warning("Taking over %s: its owner, process %d, is gone", self.path, pid)
            self.path.unlink(missing_ok=True)
            return
        raise UsageError(f"{self.folder} is in use by another run (process {pid} on {host}: "
                         f"{owner.get('command', '?')}); wait for it to end or give another --output_dir. If "
                         f"that run is over, delete {self.path}")

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass
        if self.created_folder and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

