"""Evaluation reports: WORKDIR/eval/NAME.json (+ .md), TensorBoard scalars and examples."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np


def write_json(summary: Mapping[str, Any], workdir: str, name: str) -> str:
  """Writes WORKDIR/eval/NAME.json (process 0 only); returns its path."""
  directory = os.path.join(workdir, "eval")
  json_path = os.path.join(directory, f"{name}.json")
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    with open(json_path, "w") as file:
      json.dump(summary, file, indent=2, sort_keys=True)
  return json_path


def markdown_table(summary: Mapping[str, Any], title: str, *, ideal_mask: bool = True,
                   per_class: bool = True) -> str:
  """A separation summary as a Markdown report (the same numbers as the JSON). ideal_mask /
  per_class False leave those rows out, and a summary without "mixture_sdr" the floor rows
  (`python -m tribert_jax.score` without mixtures or labels)."""
  f = lambda x: f"{x:.2f}"  # noqa: E731
  floor = "mixture_sdr" in summary
  lines = [f"# {title}", "",
           f"{summary['num_scored']} of {summary['num_mixtures']} mixtures scored; skipped: "
           + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["skipped"].items())
           + (f"; ideal mask unscorable on {summary['ideal_mask_skipped']}." if ideal_mask
              else "."), "",
           "| | SDR | SIR | SAR |", "|---|---|---|---|",
           f"| separated (mean) | {f(summary['sdr'])} | {f(summary['sir'])} | {f(summary['sar'])} |",
           f"| separated (median) | {f(summary['sdr_median'])} | {f(summary['sir_median'])} | "
           f"{f(summary['sar_median'])} |"]
  if floor:
    lines.append(f"| unprocessed mixture (mean) | {f(summary['mixture_sdr'])} | | |")
  if ideal_mask:
    lines.append(f"| ideal binary mask (mean) | {f(summary['ideal_mask_sdr'])} | "
                 f"{f(summary['ideal_mask_sir'])} | {f(summary['ideal_mask_sar'])} |")
  if floor:
    lines += ["", f"SDR improvement over the mixture: mean {f(summary['sdr_improvement'])}, "
              f"median {f(summary['sdr_improvement_median'])} dB."]
  if per_class:
    lines += ["", "| class | SDR | sources |", "|---|---|---|"]
    for name, entry in sorted(summary["per_class_sdr"].items()):
      lines.append(f"| {name} | {f(entry['sdr'])} | {entry['count']} |")
  return "\n".join(lines) + "\n"


def scalar_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
  """Flat scalars of a separation summary for TensorBoard and the best-checkpoint choice."""
  scalars = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float))}
  scalars.update({f"skipped_{k}": float(v) for k, v in summary["skipped"].items()})
  scalars.update({f"class_sdr/{k}": v["sdr"] for k, v in summary["per_class_sdr"].items()})
  return scalars


def write_report(summary: Mapping[str, Any], workdir: str, name: str) -> tuple[str, str]:
  """Writes a separation summary as WORKDIR/eval/NAME.json and NAME.md (process 0 only);
  returns both paths."""
  json_path = write_json(summary, workdir, name)
  markdown_path = os.path.join(workdir, "eval", f"{name}.md")
  if jax.process_index() == 0:
    with open(markdown_path, "w") as file:
      file.write(markdown_table(summary, name))
  return json_path, markdown_path


def write_table_report(report: Mapping[str, Any], table: str, workdir: str, name: str) -> str:
  """Writes WORKDIR/NAME.json and NAME.md, prints the Markdown table and returns it (the
  retrieval, probe and ablation tables); the JSON is rewritten as a long run goes on."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{name}.json"), "w") as handle:
    json.dump(report, handle, indent=2)
  with open(os.path.join(workdir, f"{name}.md"), "w") as handle:
    handle.write(table)
  print(table)
  return table


def write_examples(writer: Any, step: int, examples: Sequence[Mapping[str, np.ndarray]],
                   sample_rate: int) -> None:
  """TensorBoard audio/images of the fixed example mixtures (process 0 writes)."""
  if examples and jax.process_index() == 0:
    # Imported here: monitoring pulls in TensorFlow (clu's summary writer), which the table
    # reports (python -m tribert_jax.score) do not need.
    from tribert_jax import monitoring  # pylint: disable=g-import-not-at-top
    monitoring.write_separation_examples(writer, step, examples, sample_rate)
