"""Adapters to the outside world: registries, package indexes, resolvers and the Docker daemon."""
