"""The on-disk dataset layout: schema (names, columns, records), reader, writer, skeleton.

Kept import-light on purpose (no submodule is imported here): tribert_jax.models imports
`layout.skeleton` and must not pull in soundfile / PIL.
"""
