"""The error model: every failure a user can cause and fix is an `AutolabelError`.

    AutolabelError            the CLI prints its message as one line and exits 1
    ├── ConfigError           a setting out of range or unknown (also a ValueError)
    ├── DatasetError          a dataset root, split or file is missing or malformed
    ├── StoreError            a label store is missing, malformed or used against its rules
    ├── CheckpointError       a file is not a readable checkpoint of this project
    └── TrainingError         training diverged: a non-finite loss or weight

Messages name the path or the setting and, where there is one, the fix. Anything else that escapes a command
is a bug and surfaces as a traceback.
"""

from __future__ import annotations


class AutolabelError(Exception):
    """A failure the user caused and can act on; the message is the whole story."""


class ConfigError(AutolabelError, ValueError):
    """A setting is out of range, unknown or contradicts another; the message names the setting."""


class DatasetError(AutolabelError):
    """A dataset root, split or file is missing or malformed; the message names the path."""


class StoreError(AutolabelError):
    """The label store is missing, malformed, or used against its rules; the message names the URL."""


class CheckpointError(AutolabelError):
    """A file is not a readable autolabel checkpoint; the message names the file."""


class TrainingError(AutolabelError):
    """Training cannot go on (a non-finite loss or weight); the message says what to change."""
