"""The one exception a bad config raises (its own module so every part can raise it
without importing the parser)."""


class ConfigError(Exception):
    """The config cannot be applied; the message names the field."""
