"""Python package sources: the index client, wheel metadata and the resolver backends (uv, pip-tools)."""
