"""Who may write a dataset root: only the command that made it, and only into an empty (or
absent) folder or one carrying that command's own marker. Anything else is a DatasetRootError
naming the folder and the config key / flag to set; nothing is changed.

Writers build a complete copy in a staging folder next to the target (`staging_path`) and move it
into place (`move_into_place`), so a killed run never leaves a half-written root behind and a
user's files are never deleted.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Sequence


class DatasetRootError(ValueError):
  """A dataset root that this command may not write; `path` names the folder."""

  def __init__(self, path: os.PathLike | str, message: str):
    super().__init__(message)
    self.path = str(path)


def is_empty(root: pathlib.Path) -> bool:
  """True when root does not exist or is an empty folder."""
  root = pathlib.Path(root)
  return not root.exists() or (root.is_dir() and not any(root.iterdir()))


def check_writable(root: os.PathLike | str, markers: Sequence[str], owner: str, key: str,
                   hint: str) -> None:
  """Raises DatasetRootError unless `root` is absent, empty, or carries one of `markers`.

  owner: the command that writes such roots (for the message); key: the config key or flag that
  named the folder, e.g. "config.data.root" or "--out"; hint: what the user can do instead.
  """
  root = pathlib.Path(root)
  if root.exists() and not root.is_dir():
    raise DatasetRootError(root, f"{key}={root} is a file, not a folder; {hint}")
  if is_empty(root) or any((root / m).exists() for m in markers):
    return
  entries = sorted(p.name for p in root.iterdir())
  shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
  why = f"no {markers[0]} marker; " if markers else ""
  raise DatasetRootError(
      root, f"{key}={root} holds files not written by {owner} ({why}it holds {shown}); "
      f"nothing was changed. {hint}")


def staging_path(target: pathlib.Path, tag: str) -> pathlib.Path:
  """A hidden sibling of target, unique to this process: .<name>.<tag>-<pid>."""
  target = pathlib.Path(target)
  return target.with_name(f".{target.name}.{tag}-{os.getpid()}")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_staging(target: pathlib.Path, tag: str) -> None:
  """Removes staging folders of `target` left by killed runs (their process is gone)."""
  target = pathlib.Path(target)
  if not target.parent.is_dir():
    return
  prefix = f".{target.name}.{tag}-"
  for path in target.parent.iterdir():
    suffix = path.name[len(prefix):]
    if path.name.startswith(prefix) and suffix.isdigit() and not _alive(int(suffix)) \
        and path.is_dir():
      shutil.rmtree(path, ignore_errors=True)


def move_into_place(staging: pathlib.Path, target: pathlib.Path) -> None:
  """Renames the finished staging folder to target. An existing target must be empty or a root
  this command owns (checked by the caller); it is moved aside first and removed after."""
  staging, target = pathlib.Path(staging), pathlib.Path(target)
  aside = None
  if target.exists():
    if is_empty(target):
      target.rmdir()
    else:
      aside = staging_path(target, "replaced")
      os.rename(target, aside)
  os.rename(staging, target)
  if aside is not None:
    shutil.rmtree(aside, ignore_errors=True)
