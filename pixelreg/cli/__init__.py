"""The command line: a thin Typer app whose commands parse, call one library function and print.

`app.py` holds the app, its error wrapper and exit codes; `options.py` the options commands
share; each other module one command (`bench.py`, the group of benches; `post.py`, the
commands after localization). Nothing here imports
torch at start: a command imports the library it calls when it runs, so `--help` and every
refusal come in a blink.
"""

from pixelreg.cli import calibrate, evaluate, generate, plot, post, predict, train
from pixelreg.cli.app import app, main
from pixelreg.cli.bench import bench_app

app.add_typer(bench_app, name="bench")

__all__ = ["app", "calibrate", "evaluate", "generate", "main", "plot", "post", "predict", "train"]
