"""Debian archives: fetching suites and their Packages indexes (archive), checking Release files (release)."""
