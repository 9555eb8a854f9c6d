"""Bounded byte streams: decompression by magic number and a forward-only tar reader."""
