"""The one exception type that means "the user gave us something we cannot use"."""

from __future__ import annotations

import re


class PixelregError(Exception):
    """A problem with the user's input or environment, reported as one `Error:` line.

    The library names its parameters as it calls them (`val_fraction must be in [0, 1)`) and
    lists them in `options`; the command line names them by their flags instead.
    """

    code = 1  # the command's exit status

    def __init__(self, message: str, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options

    def for_command_line(self) -> str:
        """The message with its parameters named as flags: `val_fraction` -> `--val-fraction`."""
        message = str(self)
        for name in self.options:
            flag = "--" + name.replace("_", "-")
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag, message)
        return message


class Interrupted(PixelregError):
    """Ctrl-C (or SIGTERM) where work is left to resume: the line says how, the exit is 130."""

    code = 130
