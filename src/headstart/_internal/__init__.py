"""Helpers every room may use: atomic file writes, hashing, validation messages, lazy exports.

Nothing here imports any other part of headstart except ``headstart.errors``.
"""
