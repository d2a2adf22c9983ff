"""Engines run checked model-space arrays. One protocol (engine/base.py); `build_engine` puts the pieces
together: a compiled XLA function (or the twin of a tiny stack) always behind a batcher."""
