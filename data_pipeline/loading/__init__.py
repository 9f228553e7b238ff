"""Loading: clip sources (folder layout / TFDS build), sampling plans, tf.data decoding, the
train / eval / clip pipelines (pipeline.py documents the batch contract) and the TFDS builders."""
