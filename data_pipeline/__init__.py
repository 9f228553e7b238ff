"""Data: the on-disk layout, the SynthMUSIC generator, real-video ingestion, tf.data loading."""
