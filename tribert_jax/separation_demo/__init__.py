"""The separation demo behind `python -m tribert_jax.separate` (tribert_jax/separate.py).

One idea per module:
  restore.py   a training workdir -> its config (WORKDIR/config.json), separation model and
               checkpoint variables (latest or a given step), class names
  media.py     the inputs: an mp4 (decoded like ingestion: 8 fps frames, 11025 Hz mono) or a
               clip folder of the dataset layout -> frames, audio and pose file of one video
  players.py   mode (b): the players of one video, from the AlphaPose JSON's tracks and boxes
               or from boxes the user gives -> one region and pose track per player
  examples.py  videos / players -> model batches (audio cut into data.audio_length windows,
               the frames and pose window of each), the separation function (the task's
               batch -> model inputs, mask -> waveform of tribert_jax/spectral.py)
  page.py      the results in --out: wavs, spectrogram / mask / attention PNGs, index.html
"""
