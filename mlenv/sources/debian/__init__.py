"""Debian archives: sources entries, signed Release files, Packages indexes."""
