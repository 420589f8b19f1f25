"""`python -m pixelreg` and the `pixelreg` command: start with Ctrl-C and SIGTERM handled.

The command line takes a few tenths of a second to import; a signal in that time ends the
process with one line and exit 130, not a traceback.
"""

import signal
import sys


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        from pixelreg.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
