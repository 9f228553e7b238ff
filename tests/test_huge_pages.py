"""main.py re-executes itself with glibc's huge-page malloc (tribert_jax/huge_pages.py)."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tribert_jax import huge_pages  # noqa: E402  pylint: disable=g-import-not-at-top

SETTING = "glibc.malloc.hugetlb=1"


def test_environment_gets_the_tunable_appended_once():
  env = huge_pages.environment_with_huge_pages({"PATH": "/bin"}, "madvise", (2, 36))
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": SETTING}
  kept = huge_pages.environment_with_huge_pages(
      {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "always", (2, 35))
  assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{SETTING}"
  # The re-executed process (or a user's own choice, even =0) is left alone: no loop.
  assert huge_pages.environment_with_huge_pages({"GLIBC_TUNABLES": SETTING}, "madvise",
                                                (2, 36)) is None
  assert huge_pages.environment_with_huge_pages(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36)) is None


@pytest.mark.parametrize("environ,mode,glibc", [
    ({"TRIBERT_HUGE_PAGES": "0"}, "madvise", (2, 36)),  # the opt-out
    ({}, "never", (2, 36)),  # the kernel offers none
    ({}, "", (2, 36)),  # no THP file
    ({}, "madvise", (2, 34)),  # glibc without the tunable
    ({}, "madvise", (0, 0)),  # not glibc
])
def test_no_reexecution_where_it_cannot_help(environ, mode, glibc):
  assert huge_pages.environment_with_huge_pages(environ, mode, glibc) is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert huge_pages.thp_mode(str(path)) == "madvise"
  assert huge_pages.thp_mode(str(tmp_path / "absent")) == ""


def _check_stdout(**extra):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env.update(extra, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, str(REPO / "main.py"), "--mode=check",
                           "--config=configs/pose_pretrain.py:tiny",
                           "--config.data.root=/nonexistent/synthmusic"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if line.startswith("malloc: ")]


def test_main_runs_with_huge_page_malloc_where_the_machine_offers_it():
  useful = (sys.platform.startswith("linux") and huge_pages.thp_mode() in ("always", "madvise")
            and huge_pages.glibc_version() >= (2, 35))
  [line] = _check_stdout()
  if useful:
    assert line.startswith("malloc: transparent huge pages on request "
                           f"(GLIBC_TUNABLES={SETTING};"), line
  else:
    assert line.startswith("malloc: default pages ("), line
  [line] = _check_stdout(TRIBERT_HUGE_PAGES="0")
  assert line == "malloc: default pages (TRIBERT_HUGE_PAGES=0)"
