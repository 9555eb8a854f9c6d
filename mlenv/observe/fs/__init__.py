"""Filesystem views of an image or a directory tree, read without extracting anything."""
