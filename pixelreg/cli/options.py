"""Options that several commands share, and the data options generated from `DataSpec`.

Each shared option is declared once here, with its help; a command names it in its signature.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_writable_place
from pixelreg.simulate.spec import DataSpec, parse_count, parse_range, read_spec

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but the result on stdout.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Device = Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")]
Threshold = Annotated[
    float | None,
    typer.Option(
        help="Least confidence (0 to 1) of a detection kept by a counting model; default: the "
        "threshold chosen on validation, stored in the checkpoint.",
        show_default=False,
    ),
]
CheckpointArg = Annotated[
    Path, typer.Argument(help="A checkpoint (.pt), or a run directory meaning its best.pt.")
]
BenchOut = Annotated[Path, typer.Option(help="Directory for the bench's runs and its JSON (new or empty).")]
SIZE_HELP = "Image size: N for NxN, or H W (also HxW) for rows x columns."
OPTION_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
RANGED = ("blur", "photons", "background_photons", "z")  # data options that take a value or LO:HI


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option `name` (rather than its default taking effect)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def parse_size(text: str) -> tuple[int, int]:
    """'50' -> (50, 50); '30x70' or '30,70' -> (30, 70) as (height, width)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) in (1, 2):
        return numbers[0], numbers[-1]
    raise typer.BadParameter(f"--size must be N, or H W (also HxW), got {text!r}")


def _data_option(
    spec_field: Any, names: set[str], defaults: DataSpec, default_of: dict[str, Any]
) -> inspect.Parameter:
    """The command-line parameter of one DataSpec field, with the spec's default and help."""
    name = "size" if spec_field.name == "height" else spec_field.name
    annotation: Any
    default: Any
    if f"{name}_max" in names:  # a value or LO:HI, read by `parse_count` or `parse_range`
        annotation = Annotated[str, typer.Option(help=spec_field.metadata["help"])]
        default = format(getattr(defaults, name), "g")
    elif name == "size":
        same = defaults.height == defaults.width
        annotation = Annotated[str, typer.Option(help=SIZE_HELP)]
        default = str(defaults.height) if same else f"{defaults.height}x{defaults.width}"
    else:
        flag = "--" + name.replace("_", "-")
        kind = OPTION_TYPES[str(spec_field.type)]
        declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        limits = {key: spec_field.metadata[key] for key in ("min", "max") if key in spec_field.metadata}
        annotation = Annotated[kind, typer.Option(declaration, help=spec_field.metadata["help"], **limits)]
        default = spec_field.default  # as declared: holdout stays `auto` until resolved
    default = default_of.get(name, default)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def data_option_parameters(
    only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None
) -> list[inspect.Parameter]:
    """One command-line parameter per DataSpec field (of those named `only`), with the spec's
    default unless `defaults` gives another. `height` and `width` become one `--size`; adding a
    field to DataSpec adds its option to `generate` and `train`."""
    names = {spec_field.name for spec_field in fields(DataSpec)}
    wanted = [
        f
        for f in fields(DataSpec)
        if f.name != "width" and not f.name.endswith("_max")
        and (only is None or ("size" if f.name == "height" else f.name) in only)
    ]  # fmt: skip
    return [_data_option(f, names, DataSpec(), defaults or {}) for f in wanted]


SPEC_FILE = inspect.Parameter(
    "spec_file",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="A spec JSON (as `generate --json` prints under spec, or as `calibrate` writes) whose "
            "fields are the data options below; options given beside it override its values.",
            show_default=False,
        ),
    ],
)
CONTEXT = inspect.Parameter("data_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def with_data_options(
    only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None
) -> Callable[[F], F]:
    """Give a command the data options (those named `only`, with the `defaults` given); it
    receives their values as one `spec_options` dict. Without `only`, also --spec FILE: the
    options' values from a file, those given overriding."""
    added = data_option_parameters(only, defaults)
    from_file = [SPEC_FILE] if only is None else []

    def decorate(function: F) -> F:
        signature = inspect.signature(function, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != "spec_options"]
        own = [p.name for p in kept if p.annotation is typer.Context]  # typer fills in one context
        context = own[0] if own else CONTEXT.name

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = kwargs[context] if own else kwargs.pop(context)
            spec_options = {p.name: kwargs.pop(p.name) for p in added}
            spec_file = kwargs.pop("spec_file", None)
            if spec_file is not None:
                given = {name for name in spec_options if given_on_command_line(ctx, name)}
                from_spec = options_of(read_spec(spec_file))
                spec_options = {**from_spec, **{n: spec_options[n] for n in given}}
            return function(*args, spec_options=spec_options, **kwargs)

        parameters = [*kept, *from_file, *added, *([] if own else [CONTEXT])]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def options_of(spec: DataSpec) -> dict[str, Any]:
    """The data options' values (as the command line gives them) that make `spec`."""
    values = {
        k: v for k, v in spec.to_dict().items() if k not in ("height", "width") and not k.endswith("_max")
    }
    values["size"] = f"{spec.height}x{spec.width}"
    values["points"] = str(spec.points) if spec.points_max is None else f"{spec.points}:{spec.points_max}"
    for name in RANGED:
        low, high = getattr(spec, name), getattr(spec, f"{name}_max")
        values[name] = repr(float(low)) if high is None else f"{float(low)!r}:{float(high)!r}"
    return values


def make_spec(spec_options: dict[str, Any]) -> DataSpec:
    """A DataSpec from the data options (size, point count and ranges given as text)."""
    values = dict(spec_options)
    height, width = parse_size(values.pop("size"))
    if "points" in values:
        values["points"], values["points_max"] = parse_count(str(values.pop("points")))
    for name in RANGED:
        if name in values:
            values[name], values[f"{name}_max"] = parse_range(
                str(values.pop(name)), "--" + name.replace("_", "-")
            )
    return DataSpec(height=height, width=width, **values)


def comma_list(text: str, option: str) -> tuple[str, ...]:
    """'a, b' -> ('a', 'b'); an empty list or a name given twice is refused."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise PixelregError(f"{option} names nothing; give a comma-separated list")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise PixelregError(f"{option} names {', '.join(twice)} more than once")
    return names


def number_list(text: str, option: str, least: float, above: bool = False) -> tuple[float, ...]:
    """'1, 1.5' -> (1.0, 1.5); each number finite and at least (or, with `above`, above) `least`."""
    values = []
    for word in comma_list(text, option):
        try:
            value = float(word)
        except ValueError:
            raise PixelregError(f"{option} takes numbers; got {word!r}") from None
        if not math.isfinite(value) or value < least or (above and value == least):
            raise PixelregError(
                f"{option} takes numbers {'above' if above else 'from'} {least:g}; got {word}"
            )
        values.append(value)
    return tuple(values)


def numbers(values: tuple[float, ...]) -> str:
    """(1.0, 1.5) -> '1,1.5': a default of a number-list option."""
    return ",".join(f"{value:g}" for value in values)


LEAST_PIXEL_SIZE = 1.0  # nm: tables in nm keep 4 decimals, 1e-4 px of such a pixel; cameras' are ~100


def check_pixel_size(pixel_size: float) -> None:
    """Refuse a --pixel-size that is not a camera's pixel in nm: below LEAST_PIXEL_SIZE a table in
    nm could not hold positions to 1e-4 px."""
    if not (math.isfinite(pixel_size) and LEAST_PIXEL_SIZE <= pixel_size <= 1e6):
        raise PixelregError(
            f"--pixel-size must be {LEAST_PIXEL_SIZE:g} to 1e6 nm (a camera's pixel), got {pixel_size:g}"
        )


def refuse_overwriting(out: Path, inputs: list[Path], flag: str = "--out") -> None:
    """Refuse an output that would replace one of the command's own inputs, or is no file."""
    target = require_writable_place(out)
    for path in inputs:
        if path.exists() and Path(os.path.realpath(path)) == target:
            raise PixelregError(f"{flag} {out} is one of this command's inputs; choose another file")


def parse_bounds(text: str, option: str) -> tuple[float, float]:
    """'LO:HI' -> (LO, HI), either side left open ('500:', ':0.2'); a single number is both."""
    parts = text.split(":")
    if len(parts) > 2:
        raise PixelregError(f"{option} takes LO:HI (either side may be left out), got {text!r}")
    try:
        low, high = (
            float(part) if part.strip() else math.inf * sign
            for part, sign in zip(parts if len(parts) == 2 else parts * 2, (-1, 1), strict=True)
        )
    except ValueError:
        raise PixelregError(f"{option} takes LO:HI (either side may be left out), got {text!r}") from None
    if math.isnan(low) or math.isnan(high):
        raise PixelregError(f"{option} takes numbers, got {text!r}")
    if low > high:
        raise PixelregError(f"{option} {text}: LO is above HI, which keeps nothing")
    return low, high


TableArg = Annotated[
    Path,
    typer.Argument(
        help="A localization table: pixelreg's CSV, ThunderSTORM's CSV or Picasso's HDF5.",
        metavar="LOCS",
        show_default=False,
    ),
]
TableFormat = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="The table written: csv (pixelreg's), thunderstorm, or picasso (HDF5, with its YAML "
        "beside it); default: picasso for an .hdf5 --out, else the format LOCS is in.",
        show_default=False,
    ),
]
TablePixelSize = Annotated[
    float,
    typer.Option(
        help="nm per camera pixel: to read and write ThunderSTORM's nm, Picasso's metadata, and to "
        "report lengths in nm."
    ),
]
