"""What every phase config shares: the size presets and the config-argument parser.

A config file takes one argument after the colon (`configs/pretrain.py:cpu`): comma-separated
tokens, each either a size (`paper`, `cpu`, `tiny`), `key=value`, or (for files that accept one)
a bare positional word:

  configs/pretrain.py                  paper size, paper variant
  configs/pretrain.py:cpu              cpu size
  configs/pretrain.py:paper,variant=release   the authors' release architecture at paper size
  configs/ablations.py:cpu,erase_pose  a positional word: the ablation variant
"""

from __future__ import annotations

from typing import Any

SIZES = ("paper", "cpu", "tiny")  # paper: the paper's sizes; cpu: a 2-core laptop; tiny: tests
DATASETS = ("synthmusic", "music21", "music")


def parse_size(arg: str | None) -> str:
  """The size token of a config argument alone ('' or None means paper)."""
  return parse_arg(arg)["size"]


def parse_arg(arg: str | None, positional: str | None = None, **defaults: Any) -> dict[str, Any]:
  """'cpu,variant=release' -> {'size': 'cpu', 'variant': 'release', ...defaults}.

  `defaults` names the keys a file accepts (besides size) and their defaults; `positional`
  names the key a bare word other than a size sets. Anything else raises naming the token.
  """
  values: dict[str, Any] = {"size": "paper", **defaults}
  for token in filter(None, (t.strip() for t in (arg or "").split(","))):
    key, equals, value = token.partition("=")
    if equals:
      if key not in values or key == "size" and value not in SIZES:
        raise ValueError(f"config argument {token!r}: expected one of "
                         f"{sorted(k for k in values)} = value (sizes {SIZES})")
      values[key] = value
    elif token in SIZES:
      values["size"] = token
    elif positional is not None:
      values[positional] = token
    else:
      raise ValueError(f"config argument must be one of {SIZES} (or key=value for "
                       f"{sorted(k for k in values if k != 'size')}), got {token!r}")
  return values
