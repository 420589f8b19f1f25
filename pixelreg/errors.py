"""The one exception type that means "the user gave us something we cannot use"."""

from __future__ import annotations


class PixelregError(Exception):
    """A problem with the user's input or environment, reported as one `Error:` line.

    `options` names the parameters the message begins with (as the library calls them); the
    command line names them by their flags instead.
    """

    def __init__(self, message: str, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options

    def for_command_line(self) -> str:
        """The message with its parameters named as flags: `threshold` -> `--threshold`."""
        message = str(self)
        names = ", ".join(self.options)
        if self.options and message.startswith(names):
            flags = ", ".join("--" + name.replace("_", "-") for name in self.options)
            return flags + message[len(names) :]
        return message
