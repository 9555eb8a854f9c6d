"""Lock -> image: fetch the artifacts, assemble the context, build on the engine, normalise."""
