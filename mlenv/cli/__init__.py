"""The command-line interface: thin commands over functions the tests call directly."""
