"""Probes: each reads one fact (os-release, dpkg, glibc, Python, CUDA) from a filesystem view."""
