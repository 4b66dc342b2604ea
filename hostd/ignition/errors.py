"""The exceptions of provisioning: ConfigError for a config that cannot be applied (found
before anything is written), ApplyError for a step that failed while applying. Their own
module, so every part can raise them without importing the parser."""


class ConfigError(Exception):
    """The config cannot be applied; the message names the field."""


class ApplyError(Exception):
    """A step failed after the whole config was checked (a disk tool failed): what came
    before it was applied, nothing after it. The message says which step."""
