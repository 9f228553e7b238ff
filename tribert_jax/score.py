"""Scores folders of separated wav files with the project's protocol: `python -m tribert_jax.score`.

  python -m tribert_jax.score --estimates=EST --references=REF [--mixtures=MIX] --out=OUT

File convention (one, for every tree): REF/<mixture>/<source>.wav holds the ground-truth
sources of each mixture (one sub-folder per mixture, one mono wav per source); EST must hold
exactly the same relative paths (EST/<mixture>/<source>.wav), and --mixtures, when given,
MIX/<mixture>.wav, the mixture itself (for the unprocessed-mixture SDR floor). A file in one
tree and not the other is an error naming every unmatched file. Sources are paired by name
(no permutation search) and ordered by name within a mixture; every mixture must have the
same number of sources.

Scoring is the evaluation's: tribert_jax.evaluation.metrics (mir_eval 0.8.2
bss_eval_sources, compute_permutation=False) per mixture, metrics averaged over a mixture's
sources, then mean and median over mixtures (tribert_jax.evaluation.separation.summarise).
Skip policy: a mixture is skipped, counted with its reason, when one of its reference or
estimated sources is silent. --silent_threshold=0.0 (default, the project's) means exactly
zero (mir_eval cannot score those); --silent_threshold=1e-5 is the TriBERT / Sound-of-Pixels
release's test sum(|x|) <= 1e-5.

Audio is read as it is: a sample rate other than --sample_rate, stereo files, lengths that
differ within a mixture and NaN/Inf samples are errors naming the file; nothing is resampled,
down-mixed, trimmed or padded. Writes OUT/score.json and OUT/score.md (nothing else) and
prints the Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys
from typing import Any, Sequence

import numpy as np
import soundfile

from tribert_jax.evaluation import metrics
from tribert_jax.evaluation import reports
from tribert_jax.evaluation import separation

RELEASE_SILENT_THRESHOLD = 1e-5
DEFAULT_SAMPLE_RATE = 11025


class ScoreInputError(ValueError):
  """The wav folders do not match the convention, or a file is unusable; names the file(s)."""


@dataclasses.dataclass(frozen=True)
class Mixture:
  name: str
  sources: tuple[str, ...]  # source file names (the same in both trees), sorted
  reference: np.ndarray  # [N, L] float64
  estimate: np.ndarray  # [N, L] float64
  mixture: np.ndarray | None  # [L] float64


def _wav_files(root: pathlib.Path, flag: str) -> set[str]:
  """Relative paths (posix) of the <mixture>/<source>.wav files under root."""
  if not root.is_dir():
    raise ScoreInputError(f"{flag}: {root} is not a folder")
  files, misplaced = set(), []
  for path in sorted(root.rglob("*")):
    if path.is_file() and path.suffix.lower() == ".wav":
      relative = path.relative_to(root)
      (files.add(relative.as_posix()) if len(relative.parts) == 2
       else misplaced.append(str(path)))
  if misplaced:
    raise ScoreInputError(
        f"{flag}: wav files must be {root}/<mixture>/<source>.wav; not at that depth: "
        + ", ".join(misplaced))
  if not files:
    raise ScoreInputError(f"{flag}: no <mixture>/<source>.wav files under {root}")
  return files


def _unmatched(files: Sequence[str], root: pathlib.Path, other: pathlib.Path) -> str:
  return "; ".join(f"{root / f} (no {other / f})" for f in sorted(files))


def read_wav(path: pathlib.Path, sample_rate: int) -> np.ndarray:
  """Mono float64 samples of path; ScoreInputError naming the file when unusable."""
  try:
    samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise ScoreInputError(f"{path}: unreadable wav ({error})") from error
  if rate != sample_rate:
    raise ScoreInputError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
                          "(--sample_rate); files are not resampled")
  if samples.shape[1] != 1:
    raise ScoreInputError(f"{path}: {samples.shape[1]} channels; mono wav expected (files are "
                          "not down-mixed)")
  if not np.all(np.isfinite(samples)):
    raise ScoreInputError(f"{path}: NaN/Inf samples")
  return samples[:, 0]


def _stack(paths: Sequence[pathlib.Path], sample_rate: int,
           length: tuple[int, pathlib.Path] | None) -> np.ndarray:
  """[N, L] of the wavs at paths, all as long as `length` = (samples, the file that set it),
  or as the first of them."""
  rows = []
  for path in paths:
    row = read_wav(path, sample_rate)
    length = (len(row), path) if length is None else length
    if len(row) != length[0]:
      raise ScoreInputError(f"{path}: {len(row)} samples but {length[1]} has {length[0]}; "
                            "files are not trimmed or padded")
    rows.append(row)
  return np.stack(rows)


def load_mixtures(estimates: str, references: str, mixtures: str | None,
                  sample_rate: int) -> list[Mixture]:
  """Matches the trees (see the module docstring) and reads every file."""
  estimates_root, references_root = pathlib.Path(estimates), pathlib.Path(references)
  reference_files = _wav_files(references_root, "--references")
  estimate_files = _wav_files(estimates_root, "--estimates")
  problems = []
  if reference_files - estimate_files:
    problems.append("references without an estimate: " + _unmatched(
        reference_files - estimate_files, references_root, estimates_root))
  if estimate_files - reference_files:
    problems.append("estimates without a reference: " + _unmatched(
        estimate_files - reference_files, estimates_root, references_root))
  grouped: dict[str, list[str]] = {}
  for relative in sorted(reference_files):
    name, source = relative.split("/")
    grouped.setdefault(name, []).append(source)
  mixtures_root = pathlib.Path(mixtures) if mixtures else None
  if mixtures_root is not None:
    if not mixtures_root.is_dir():
      raise ScoreInputError(f"--mixtures: {mixtures_root} is not a folder")
    given = {p.stem for p in mixtures_root.iterdir()
             if p.is_file() and p.suffix.lower() == ".wav"}
    missing = sorted(set(grouped) - given)
    extra = sorted(given - set(grouped))
    if missing:
      problems.append("mixtures without a mixture wav: " + ", ".join(
          str(mixtures_root / f"{m}.wav") for m in missing))
    if extra:
      problems.append("mixture wavs without references: " + ", ".join(
          str(mixtures_root / f"{m}.wav") for m in extra))
  if problems:
    raise ScoreInputError("unmatched files (convention: <mixture>/<source>.wav in both "
                          "--references and --estimates, <mixture>.wav in --mixtures):\n  "
                          + "\n  ".join(problems))
  counts = {len(v) for v in grouped.values()}
  if len(counts) > 1:
    raise ScoreInputError("every mixture must have the same number of sources; got " + ", ".join(
        f"{references_root / name}: {len(v)}" for name, v in sorted(grouped.items())))
  out = []
  for name, sources in sorted(grouped.items()):
    reference = _stack([references_root / name / s for s in sources], sample_rate, None)
    length = (reference.shape[1], references_root / name / sources[0])
    estimate = _stack([estimates_root / name / s for s in sources], sample_rate, length)
    mixture = None
    if mixtures_root is not None:
      mixture = _stack([mixtures_root / f"{name}.wav"], sample_rate, length)[0]
    out.append(Mixture(name, tuple(sources), reference, estimate, mixture))
  return out


def score(items: Sequence[Mixture], silent_threshold: float = 0.0, backend: str = "mir_eval",
          num_workers: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(summary, records): the evaluation's summary and one metrics.score_mixture record per
  mixture (skipped ones with their reason)."""
  records: list[dict[str, Any] | None] = []
  tasks, positions = [], []
  for item in items:
    try:
      metrics.check_not_silent(item.reference, item.estimate, silent_threshold)
    except metrics.SilentSourceError as error:
      records.append({"status": "skipped", "reason": str(error)})
      continue
    positions.append(len(records))
    records.append(None)
    tasks.append((item.reference, item.estimate, item.mixture, None, backend))
  for position, record in zip(positions, separation.score_all(tasks, num_workers,
                                                               progress=False)):
    records[position] = record
  num_sources = len(items[0].sources) if items else 0
  arrays = separation.per_example_arrays(records, num_sources)
  summary = separation.summarise(arrays, np.zeros((len(records), num_sources, 0)), [])
  for key in [k for k in summary if k.startswith("ideal_mask")] + ["per_class_sdr"]:
    del summary[key]
  if not any(item.mixture is not None for item in items):
    for key in ("mixture_sdr", "mixture_sdr_median", "sdr_improvement",
                "sdr_improvement_median"):
      del summary[key]
  return summary, records


def _finite(value: float) -> float | None:
  return float(value) if math.isfinite(value) else None


def _per_file(items: Sequence[Mixture], records: Sequence[dict[str, Any]]) -> list[dict]:
  rows = []
  for item, record in zip(items, records):
    for n, source in enumerate(item.sources):
      row: dict[str, Any] = {"mixture": item.name, "source": source, "status": record["status"]}
      if record["status"] == "ok":
        row.update({m: _finite(record["separated"][m][n]) for m in separation.METRICS})
        if record["mixture"] is not None:
          row["mixture_sdr"] = _finite(record["mixture"]["sdr"][n])
      else:
        row["reason"] = record["reason"]
      rows.append(row)
  return rows


def markdown(summary: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
  """The summary (reports.markdown_table) and the per-file table."""
  floor = "mixture_sdr" in summary
  f = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
  lines = ["", "## Per file", "",
           "| mixture | source | SDR | SIR | SAR |" + (" mixture SDR |" if floor else "")
           + " status |", "|---" * (6 + floor) + "|"]
  for row in rows:
    lines.append(f"| {row['mixture']} | {row['source']} | "
                 + " | ".join(f(row.get(m)) for m in separation.METRICS) + " | "
                 + (f"{f(row.get('mixture_sdr'))} | " if floor else "")
                 + (row["status"] if row["status"] == "ok" else f"skipped: {row['reason']}")
                 + " |")
  table = reports.markdown_table(summary, "score", ideal_mask=False, per_class=False)
  return table + "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
  """NaN/Inf -> None, so score.json is strict JSON."""
  if isinstance(value, float):
    return _finite(value)
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m tribert_jax.score",
      description="Score separated wav files against references with the project's protocol "
      "(mir_eval bss_eval_sources via tribert_jax.evaluation.metrics). Convention: "
      "REFERENCES/<mixture>/<source>.wav, the same relative paths under ESTIMATES, and "
      "MIXTURES/<mixture>.wav. Files are not resampled, down-mixed, trimmed or padded.")
  parser.add_argument("--estimates", required=True, help="folder of <mixture>/<source>.wav")
  parser.add_argument("--references", required=True, help="folder of <mixture>/<source>.wav")
  parser.add_argument("--mixtures", default=None,
                      help="optional folder of <mixture>.wav: adds the unprocessed-mixture SDR "
                      "floor and the SDR improvement")
  parser.add_argument("--out", required=True, help="writes OUT/score.json and OUT/score.md")
  parser.add_argument("--silent_threshold", type=float, default=0.0,
                      help="skip a mixture when a reference or estimated source has "
                      "sum(|x|) <= this; 0.0 (default, the project's policy) skips only exact "
                      "zeros, which mir_eval cannot score; 1e-5 is the TriBERT / "
                      "Sound-of-Pixels release's value")
  parser.add_argument("--sample_rate", type=int, default=DEFAULT_SAMPLE_RATE,
                      help="every file must have this rate (default 11025 Hz, the project's); "
                      "other rates are an error, not resampled")
  parser.add_argument("--backend", default="mir_eval", choices=metrics.BACKENDS,
                      help="BSS-eval implementation (default mir_eval, what the field reports)")
  parser.add_argument("--num_workers", type=int, default=0,
                      help="scoring processes (0 = all cores, 1 = in this process)")
  args = parser.parse_args(argv)
  if args.silent_threshold < 0:
    parser.error("--silent_threshold must be >= 0")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the command; returns the report written to OUT/score.json."""
  args = parse_args(argv)
  items = load_mixtures(args.estimates, args.references, args.mixtures, args.sample_rate)
  summary, records = score(items, args.silent_threshold, args.backend, args.num_workers)
  rows = _per_file(items, records)
  report = _json_safe({
      "summary": summary,
      "settings": {"estimates": args.estimates, "references": args.references,
                   "mixtures": args.mixtures, "silent_threshold": args.silent_threshold,
                   "sample_rate": args.sample_rate, "backend": args.backend},
      "skipped": [{"mixture": item.name, "reason": record["reason"]}
                  for item, record in zip(items, records) if record["status"] != "ok"],
      "files": rows})
  reports.write_table_report(report, markdown(summary, rows), args.out, "score")
  return report


if __name__ == "__main__":
  try:
    main()
  except ScoreInputError as error:
    sys.exit(f"error: {error}")
