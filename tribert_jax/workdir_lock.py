"""One run per workdir: an exclusive fcntl.flock on WORKDIR/.lock (pure Python, no JAX).

The lock file holds the holder's pid and host name, so a second run fails at once naming them.
The kernel drops the lock when its process ends (also on kill -9), so a lock file left behind by
a dead process does not block: the next run takes the lock and rewrites the file. The file itself
is never deleted (deleting it would let two runs lock two different files).
"""

from __future__ import annotations

import fcntl
import os
import socket

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


class WorkdirLock:
  """lock = WorkdirLock(workdir).acquire(); ...; lock.release() (or process exit)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    """Creates workdir if needed and takes the lock, or raises WorkdirLockedError at once."""
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = os.pread(fd, 4096, 0).decode(errors="replace").split()
      os.close(fd)
      fields = dict(item.partition("=")[::2] for item in holder)
      raise WorkdirLockedError(
          f"workdir {self.workdir} is in use by another run (pid {fields.get('pid', '?')} on "
          f"host {fields.get('host', '?')}, lock file {self.path}); wait for it to finish or "
          "use another --workdir") from error
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    """Drops the lock (the file stays, emptied)."""
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
