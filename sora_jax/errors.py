"""Project exceptions: one type a CLI can print in a single line, with the fix in the message."""


class SoraError(Exception):
  """An error a user can act on; the message names the bad value and the fix."""


class ConfigError(SoraError):
  """A config value is missing, of the wrong type, or out of range."""


class DataError(SoraError):
  """Input data is missing, empty, corrupt or of the wrong shape."""


class CheckpointError(SoraError):
  """A checkpoint is missing, incomplete or does not fit the model."""
