"""Transparent huge pages for glibc's malloc: main.py re-executes itself with them.

XLA:CPU allocates a step's buffers with malloc; glibc serves large blocks as fresh mmaps, so
every step faults its buffers in again page by page. With the glibc tunable
`glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks the kernel for transparent huge pages
(madvise), which cut the cpu TriBERT train step's page faults from 2.05 M to 0.74 M and its time
by 18-20 % on the 2-core VM (benchmarks/README.md, "Large pages for XLA's buffers"). glibc reads
tunables once, when the process starts, so a process cannot switch them on for itself: main.py
calls `reexec_if_useful()` first thing, which replaces the process with the same command and the
tunable added to GLIBC_TUNABLES. Nothing happens when the variable already names
`glibc.malloc.hugetlb` (the user chose, or this is the re-executed process), when the kernel
offers no transparent huge pages (`never`), on glibc < 2.35 or off Linux, or with
TRIBERT_HUGE_PAGES=0 in the environment.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
VALUE = "1"
OPT_OUT = "TRIBERT_HUGE_PAGES"  # "0" keeps the process as started
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_ENABLED) -> str:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never"), "" if unknown."""
  try:
    with open(path, encoding="ascii") as f:
      match = re.search(r"\[(\w+)\]", f.read())
  except OSError:
    return ""
  return match.group(1) if match else ""


def glibc_version() -> tuple[int, int]:
  """(major, minor) of the C library if it is glibc, else (0, 0)."""
  try:
    name = os.confstr("CS_GNU_LIBC_VERSION") or ""
  except (AttributeError, ValueError, OSError):
    return (0, 0)
  match = re.fullmatch(r"glibc (\d+)\.(\d+).*", name)
  return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def environment_with_huge_pages(environ: Mapping[str, str], mode: str,
                                glibc: tuple[int, int]) -> dict[str, str] | None:
  """The environment to re-execute with, or None where the current process should stay."""
  if environ.get(OPT_OUT, "") == "0":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if TUNABLE in tunables:
    return None
  if mode not in ("always", "madvise") or glibc < (2, 35):
    return None
  env = dict(environ)
  setting = f"{TUNABLE}={VALUE}"
  env["GLIBC_TUNABLES"] = f"{tunables}:{setting}" if tunables else setting
  return env


def state() -> str:
  """One line saying whether this process's malloc asks for huge pages, and how to change it."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if f"{TUNABLE}={VALUE}" in tunables.split(":"):
    return (f"malloc: transparent huge pages on request (GLIBC_TUNABLES={tunables}; "
            f"{OPT_OUT}=0 runs without)")
  reason = (f"{OPT_OUT}=0" if os.environ.get(OPT_OUT, "") == "0" else
            f"GLIBC_TUNABLES={tunables}" if TUNABLE in tunables else
            f"transparent huge pages: {thp_mode() or 'unknown'}, glibc "
            f"{'.'.join(map(str, glibc_version()))}")
  return f"malloc: default pages ({reason})"


def reexec_if_useful() -> None:
  """Replaces this process with the same command line and huge-page malloc, where that is
  possible and not already so (module docstring); returns only when it does nothing."""
  if not sys.platform.startswith("linux"):
    return
  env = environment_with_huge_pages(os.environ, thp_mode(), glibc_version())
  if env is None:
    return
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
