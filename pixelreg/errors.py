"""The one exception type that means "the user gave us something we cannot use"."""


class PixelregError(Exception):
    """A problem with the user's input or environment, reported as one `Error:` line."""
