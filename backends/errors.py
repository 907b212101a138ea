"""User-facing errors: each is one line naming the file, key or option, and maps to exit code 2."""


class BadInput(Exception):
    """Bad user input (config, checkpoint, option); the CLIs print it on one line and exit 2."""

    exit_code = 2


class ConfigError(BadInput, ValueError):
    """A config value that no model can be built from."""


class WeightsError(BadInput, ValueError):
    """Missing, unexpected, mis-shaped or non-finite weights."""
