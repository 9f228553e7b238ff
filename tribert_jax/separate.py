"""Separate your own videos with a trained checkpoint: `python -m tribert_jax.separate`.

  # (a) Mix-and-Separate: mix the soundtracks of two or more videos, separate them again
  python -m tribert_jax.separate --workdir=runs/pretrain_cpu --out=demo_mix \
      --mix a.mp4 b.mp4 [--poses a.json b.json]
  python -m tribert_jax.separate --workdir=runs/pretrain_cpu --out=demo_mix \
      --mix ROOT/frames/flute/flute_003 ROOT/frames/cello/cello_001     # clip folders
  # (b) one real multi-player video: one source per player (region and pose of each)
  python -m tribert_jax.separate --workdir=runs/pretrain_cpu --out=demo_duet \
      --players duet.mp4 --pose duet.json [--num_players 2]
  python -m tribert_jax.separate --workdir=W --out=D --players duet.mp4 --boxes "20,10,90,200;150,10,90,200"

The model is the workdir's: WORKDIR/config.json and its latest checkpoint (or --checkpoint
STEP), TriBERT, Sound-of-Pixels or any separation model of tasks/separation.py. Videos are decoded
as ingestion decodes them (8 fps frames, 11025 Hz mono; tribert_jax/separation_demo/media.py);
clip folders of the dataset layout are read as they are. Mode (a) mixes the inputs as training
does (each soundtrack divided by N, summed) over their common duration; mode (b) separates the
video's own soundtrack, each player's crop (from the pose boxes of its AlphaPose JSON, or
--boxes x,y,w,h in pixels, one per player) being that source's visual input and that person's
pose its pose input. A model that reads pose needs every input's AlphaPose JSON (a clip folder's
own, or --poses / --pose), unless --allow_missing_pose runs it with that pose masked.

Writes only into --out (tribert_jax/separation_demo/page.py): mixture.wav, one estimate wav per
source (mode a: the originals too), spectrogram / mask / frame / attention PNGs, separation.json
and index.html, a page that opens offline. Errors name the file (missing video, unreadable
frames, no person detected in mode (b) without --boxes, a workdir without checkpoint) and exit 1.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
from typing import Sequence

SYNTHMUSIC_NOTE = (
    "This checkpoint was trained on SynthMUSIC, the project's synthetic dataset (drawn frames, "
    "General MIDI instruments): it separates SynthMUSIC-like videos, not real recordings. Expect "
    "little separation on real videos until it is trained on real data (MUSIC21 / MUSIC).")
OTHER_NOTE = ("Separation quality depends on how close these videos are to the data this "
              "checkpoint was trained on ({dataset}).")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m tribert_jax.separate",
      description="Separate the sound sources of videos with a trained separation checkpoint "
                  "and write wavs and an offline result page.")
  parser.add_argument("--workdir", required=True,
                      help="a training run's workdir (config.json, checkpoints/)")
  parser.add_argument("--checkpoint", type=int, default=None,
                      help="checkpoint step to use (default: the latest)")
  parser.add_argument("--out", required=True, help="output folder (the only place written)")
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--mix", nargs="+", metavar="VIDEO",
                    help="(a) two or more videos (mp4...) or clip folders ROOT/frames/<cat>/<id>")
  mode.add_argument("--players", metavar="VIDEO",
                    help="(b) one multi-player video (mp4...) or clip folder")
  parser.add_argument("--poses", nargs="+", metavar="JSON",
                      help="(a) AlphaPose JSON per --mix video, in order ('-' for none)")
  parser.add_argument("--pose", help="(b) the video's AlphaPose JSON (tracked, with boxes)")
  parser.add_argument("--boxes", help='(b) players\' regions "x,y,w,h;x,y,w,h" in frame pixels')
  parser.add_argument("--num_players", type=int, default=2,
                      help="(b) players taken from the AlphaPose tracks (most detected first)")
  parser.add_argument("--start", type=float, default=0.0, help="seconds skipped at the start")
  parser.add_argument("--seconds", type=float, default=0.0,
                      help="seconds to separate (default 0: everything after --start)")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="windows per model call (default: the run's data.eval_batch_size)")
  parser.add_argument("--allow_missing_pose", action="store_true",
                      help="run a pose-reading model on inputs without AlphaPose JSON, their "
                           "pose masked (default: refuse)")
  args = parser.parse_args(argv)
  if args.mix is not None and len(args.mix) < 2:
    parser.error("--mix needs two or more videos")
  if args.poses is not None and (args.mix is None or len(args.poses) != len(args.mix)):
    parser.error("--poses needs one entry per --mix video ('-' for none)")
  if args.mix is not None and (args.pose or args.boxes):
    parser.error("--pose and --boxes belong to --players (mode b)")
  if args.num_players < 1 or args.start < 0 or args.seconds < 0 or args.batch_size < 0:
    parser.error("--num_players must be >= 1; --start, --seconds, --batch_size >= 0")
  return args


def _track(video, config, allow_missing: bool):
  """The pose track of a mode (a) input: its JSON parsed, or masked throughout when allowed."""
  from data_pipeline.layout import reader, schema
  from tribert_jax import validation
  from tribert_jax.separation_demo import media

  persons = int(config.data.max_persons)
  if video.pose is None:
    if validation.model_uses_pose(config) and not allow_missing:
      raise media.InputError(
          f"{video.path}: no AlphaPose JSON, and this {config.model.name} reads pose (pass "
          "--poses, or --allow_missing_pose to run it with that pose masked)")
    return reader.no_pose_track(video.num_frames, persons), "no pose (masked)"
  try:
    track = reader.load_pose(video.pose, video.num_frames, video.frame_width,
                             video.frame_height, persons)
  except schema.BadClipError as error:
    raise media.InputError(str(error)) from error
  return track, f"central square, pose {video.pose.name}"


def run(args: argparse.Namespace) -> dict:
  """Loads the model, builds the sources, separates, writes the results; returns the record."""
  import numpy as np

  from data_pipeline.loading import plans
  from tribert_jax import validation
  from tribert_jax.separation_demo import examples, media, page, players, restore

  out = pathlib.Path(args.out)
  if out.exists() and not out.is_dir():
    raise media.InputError(f"--out {out} is a file, not a folder")
  config = restore.check_workdir(args.workdir, args.checkpoint)  # cheap checks first
  model_name = config.model.name
  data = config.data
  rate, fps = int(data.sample_rate), float(data.fps)
  out.mkdir(parents=True, exist_ok=True)
  work = out / ".decoding"  # decoded frames of video files; removed at the end
  overview = None
  try:
    originals = None
    if args.mix is not None:
      poses = args.poses or ["-"] * len(args.mix)
      videos = [media.open_video(path, work / str(k), rate, fps, None if pose == "-" else pose)
                for k, (path, pose) in enumerate(zip(args.mix, poses))]
      sources = []
      length = min(v.usable_samples(fps, rate) for v in videos)
      for video in videos:
        track, origin = _track(video, config, args.allow_missing_pose)
        sources.append(examples.Source(
            name=video.name, video=video, track=track, origin=origin,
            box=plans.central_box(video.frame_height, video.frame_width),
            audio=video.audio[:length] / len(videos)))  # the training mix: each source / N
      mixture = np.sum([s.audio for s in sources], axis=0)
    else:
      video = media.open_video(args.players, work / "0", rate, fps, args.pose)
      boxes = players.parse_boxes(args.boxes) if args.boxes else None
      found = players.find_players(video, args.num_players, int(data.max_persons), boxes)
      if validation.model_uses_pose(config) and not args.allow_missing_pose:
        for player in found:
          if not player.track.mask.any():
            raise players.PlayerError(
                f"{video.pose or video.path}: no pose for {player.name} ({player.origin}), and "
                f"this {model_name} reads pose (pass --pose, or --allow_missing_pose)")
      sources = [examples.Source(name=p.name, video=video, box=p.box, track=p.track,
                                 audio=None, origin=p.origin) for p in found]
      mixture = video.audio[:video.usable_samples(fps, rate)]
    first = int(round(args.start * rate))
    last = mixture.shape[0] if not args.seconds else min(
        mixture.shape[0], first + int(round(args.seconds * rate)))
    if last - first <= 0:
      raise media.InputError(f"--start {args.start} s: the inputs last only "
                             f"{mixture.shape[0] / rate:.2f} s (audio and frames together)")
    batch_size = args.batch_size or int(data.eval_batch_size)
    trained = restore.load(args.workdir, args.checkpoint)
    result = examples.separate(trained, sources, mixture, batch_size, first, last)
    if args.mix is not None:
      originals = [s.audio[first:last] for s in sources]
    else:  # the players' regions on the first window's centre frame
      centre = examples.centre_frame(first, data, video.num_frames)
      overview = (video.frame(centre), [(s.name, s.box) for s in sources])
  finally:
    shutil.rmtree(work, ignore_errors=True)
  dataset = trained.config.get("dataset", "")
  note = SYNTHMUSIC_NOTE if dataset == "synthmusic" else OTHER_NOTE.format(dataset=dataset)
  if trained.name == "tribert" and not trained.config.model.visual.enabled:
    attention_note = ("This TriBERT's visual stream is erased: it has no attention map; the "
                      "input frames are shown above instead.")
  elif trained.name == "sound_of_pixels":
    attention_note = ("Sound-of-Pixels exposes no visual attention map (it pools its visual "
                      "channels by a maximum over time and space); the input frames are shown "
                      "above instead.")
  else:
    attention_note = (f"{trained.name} returns no visual attention map; the input frames are "
                      "shown above instead.")
  summary = {"workdir": os.path.abspath(args.workdir), "step": trained.step,
             "model": trained.name, "phase": trained.config.get("phase", ""),
             "window_samples": int(data.audio_length), "mask_type": trained.config.eval.mask_type,
             "note": note, "start_seconds": first / rate}
  return page.write_results(
      out, mode="mix" if args.mix is not None else "players", summary=summary,
      names=[s.name for s in sources], inputs=[str(s.video.path) for s in sources],
      origins=[s.origin for s in sources], result=result, originals=originals,
      data_config=data, class_names=trained.class_names, attention_note=attention_note,
      overview=overview)


# Errors whose message names the file: one line, exit 1 (others get a traceback too).
EXPECTED_ERRORS = ("RestoreError", "InputError", "PlayerError", "BadClipError",
                   "FileNotFoundError")


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit status."""
  args = parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators
  except RuntimeError:  # TensorFlow already initialised (an in-process call)
    pass
  from absl import logging  # pylint: disable=g-import-not-at-top
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns about read-only checkpoint folders
  try:
    record = run(args)
  except Exception as error:  # pylint: disable=broad-except
    names = {cls.__name__ for cls in type(error).__mro__}
    if not names & set(EXPECTED_ERRORS):
      raise
    print(f"error: {error}", file=sys.stderr)
    return 1
  finally:
    logging.set_verbosity(verbosity)
  out = pathlib.Path(args.out)
  for source in record["sources"]:
    level = "silent" if source["silent"] else f"rms {source['rms']:.4f}"
    print(f"  {source['name']}: {out / source['wav']} ({level})")
  print(f"wrote {out / 'index.html'} ({record['model']} step {record['step']}, "
        f"{len(record['sources'])} sources, {record['seconds']:.2f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
