"""The data spec: every option of a synthetic dataset, its defaults, help and checks."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelreg.errors import PixelregError
from pixelreg.io.files import require_file
from pixelreg.io.schema import check_value, fields_from
from pixelreg.simulate.camera import Camera

if TYPE_CHECKING:
    from pixelreg.simulate.psf import SampledPSF

SPLITS = ("train", "val", "test")
HOLDOUTS = ("random", "quadrant", "none")
MIN_SIZE, MAX_SIZE = 8, 512
SEED_MAX = 2**32 - 1  # seeds are one 32-bit word of every random stream's key
MOST_PHOTONS = 1e8  # photons per spot or per pixel: a million times what a camera pixel holds
MIN_CAMERA_BLUR = 0.3  # px: the camera model's spots are Gaussians at least this wide


# --- how a dataset is made -----------------------------------------------------------------


def _option(default: Any, help: str, **limits: int) -> Any:
    """A DataSpec field whose help text (and `min`/`max`, if any) its command-line option shows."""
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class DataSpec:
    """Everything that determines a synthetic dataset; the same spec gives the same bytes.

    Each field is also an option of `generate` and `train` (`min_distance` is
    `--min-distance`; `height` and `width` are `--size`), with the help written here.
    """

    n: int = _option(10_000, "Number of images.")
    height: int = _option(50, "Rows of each image.")
    width: int = _option(50, "Columns of each image.")
    seed: int = _option(0, "Seed for every random choice.", min=0, max=SEED_MAX)
    val_fraction: float = _option(0.1, "Share of images in the validation split, in [0, 1).")
    test_fraction: float = _option(0.1, "Share of images in the test split, in [0, 1).")
    holdout: str = _option(
        "auto",
        "Which positions train never sees: random (val/test positions disjoint from train), "
        "quadrant (train never sees the bottom-right quadrant), none (independent images); "
        "auto: random, but none for --points LO:HI, whose images never repeat and whose spots "
        "the other two would crowd onto a tenth or a quarter of the pixels.",
    )
    points: int = _option(
        1, "Bright points per image: K, or LO:HI for a count drawn per image from LO to HI (0 allowed)."
    )
    points_max: int | None = _option(None, "The HI of --points LO:HI; None: exactly --points per image.")
    min_distance: float = _option(0.0, "Minimum distance between points of one image, pixels.")
    blur: float = _option(
        0.0, "Gaussian point-spread sigma in pixels (0: one pixel); LO:HI draws each spot's, uniformly."
    )
    blur_max: float | None = _option(None, "The HI of --blur LO:HI; None: every spot the same.")
    subpixel: bool = _option(False, "Continuous positions, spot integrated over pixels.")
    noise: float = _option(0.0, "Additive Gaussian noise sigma, grey levels (then clipped to 0..255).")
    brightness: float = _option(255.0, "Total intensity of a spot: grey levels summed over its pixels.")
    background: float = _option(0.0, "Constant grey level under the spots.")
    photons: float = _option(
        0.0,
        "Detected photons per spot; LO:HI draws each spot's, log-uniformly. Above 0 images are "
        "made by the camera model instead (16-bit ADU, sub-pixel spots), and --noise, --brightness "
        "and --background do not apply.",
    )
    photons_max: float | None = _option(None, "The HI of --photons LO:HI.")
    background_photons: float = _option(
        0.0, "Camera model: background photons per pixel; LO:HI draws each image's, uniformly."
    )
    background_photons_max: float | None = _option(None, "The HI of --background-photons LO:HI.")
    qe: float = _option(1.0, "Camera model: quantum efficiency, photoelectrons per photon, in (0, 1].")
    em_gain: float = _option(0.0, "Camera model: EM gain (0 or 1: no EM register, as sCMOS and CCD).")
    read_noise: float = _option(0.0, "Camera model: read noise, electrons rms.")
    e_per_adu: float = _option(1.0, "Camera model: photoelectrons per A/D count.")
    baseline: float = _option(0.0, "Camera model: the offset a dark pixel reads, ADU.")
    psf: str = _option(
        "",
        "Camera model: a measured PSF (psf.npz, as calibrate writes) instead of a Gaussian of "
        "--blur; empty: the Gaussian.",
    )
    z: float = _option(
        0.0,
        "With --psf: each spot's depth, nm from focus, positive away from the objective (0 for "
        "a PSF measured from a movie alone, of one plane); LO:HI draws each spot's, uniformly, and "
        "under a PSF whose shape tells depth (astigmatic) a counting model learns to read it.",
    )
    z_max: float | None = _option(None, "The HI of --z LO:HI.")

    def __post_init__(self) -> None:
        if self.holdout == "auto":  # resolved here, so that every stored spec says what it did
            object.__setattr__(self, "holdout", "none" if self.points_max is not None else "random")
        if self.photons > 0:  # photons arrive anywhere: the camera model's spots are sub-pixel
            object.__setattr__(self, "subpixel", True)
        if self.psf:  # a spec names its PSF file wherever it is read from
            object.__setattr__(self, "psf", str(Path(self.psf).absolute()))
            if self.blur == 0 and self.photons > 0:  # what a Gaussian of the PSF's width would be
                width = self.sampled_psf.gaussian_sigma(self.middle_z)  # type: ignore[union-attr]  # psf is set
                object.__setattr__(self, "blur", round(width, 3))
        self.validate()

    def validate(self) -> None:
        """Raise PixelregError naming the first impossible setting."""
        for spec_field in fields(self):
            check_value(
                getattr(self, spec_field.name), str(spec_field.type), spec_field.name, (spec_field.name,)
            )
        self._check_images_and_points()
        self._check_light()
        self._check_room()
        self._check_psf()

    def _check_images_and_points(self) -> None:
        """The seed, the count and size of images, the splits and the points per image."""
        if not 0 <= self.seed <= SEED_MAX:
            raise PixelregError(f"seed must be 0 to {SEED_MAX}, got {self.seed}", ("seed",))
        if self.n < 1:
            raise PixelregError(f"n must be at least 1, got {self.n}", ("n",))
        for name, value in (("height", self.height), ("width", self.width)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise PixelregError(f"image {name} must be {MIN_SIZE} to {MAX_SIZE}, got {value}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0) or math.isnan(value):
                raise PixelregError(f"{name} must be in [0, 1), got {value}", (name,))
        if self.val_fraction + self.test_fraction >= 1.0:
            raise PixelregError(
                "val_fraction plus test_fraction must be below 1 so that some images train, "
                f"got {self.val_fraction + self.test_fraction:g}",
                ("val_fraction", "test_fraction"),
            )
        if self.holdout not in HOLDOUTS:
            raise PixelregError(
                f"holdout must be one of {', '.join(HOLDOUTS)}, got {self.holdout!r}", ("holdout",)
            )
        if self.points_max is None and self.points < 1:
            raise PixelregError(f"points must be at least 1, got {self.points}", ("points",))
        if self.points_max is not None:
            if self.points < 0 or self.points_max < 1:
                raise PixelregError(
                    f"points {self.points}:{self.points_max}: a count range needs 0 <= LO and 1 <= HI",
                    ("points",),
                )
            if self.points > self.points_max:
                raise PixelregError(
                    f"points {self.points}:{self.points_max} is out of order; give LO:HI with LO <= HI",
                    ("points",),
                )

    def _check_light(self) -> None:
        """Blur, noise, brightness, photons and the camera: each in its range."""
        for name in ("min_distance", "blur", "noise", "background"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise PixelregError(f"{name} must be a finite number >= 0, got {value}", (name,))
        if not (self.brightness > 0.0 and math.isfinite(self.brightness)):
            raise PixelregError(
                f"brightness must be a finite number > 0, got {self.brightness}", ("brightness",)
            )
        most = {
            "blur": float(max(self.height, self.width)),
            "photons": MOST_PHOTONS,
            "background_photons": MOST_PHOTONS,
        }
        for name, limit in most.items():
            low, high = getattr(self, name), getattr(self, f"{name}_max")
            for value in (low, high):
                if value is not None and not 0.0 <= value <= limit:
                    raise PixelregError(f"{name} must be 0 to {limit:g}, got {value:g}", (name,))
            if high is not None and high < low:
                raise PixelregError(
                    f"{name} {low:g}:{high:g} is out of order; give LO:HI with LO <= HI", (name,)
                )
        if self.photons_max is not None and self.photons == 0:
            raise PixelregError("photons LO:HI draws log-uniformly, so LO must be above 0", ("photons",))
        if 0 < self.photons < 1:
            raise PixelregError(
                f"photons must be 0 (grey levels) or at least 1, got {self.photons:g}", ("photons",)
            )
        self.camera.validate()  # its settings are checked even while the grey-level model is used
        if self.camera_model:
            if self.blur < MIN_CAMERA_BLUR:
                raise PixelregError(
                    f"the camera model renders spots of blur {MIN_CAMERA_BLUR:g} px or more; got {self.blur:g}",
                    ("blur",),
                )
        elif self.blur_max is not None and self.blur == 0:
            raise PixelregError("blur LO:HI needs LO above 0", ("blur",))

    def _check_room(self) -> None:
        """The points fit in an image, min_distance apart."""
        if self.min_distance > math.hypot(self.height, self.width):
            raise PixelregError(
                f"min_distance {self.min_distance:g} is longer than the {self.height}x{self.width} "
                "image's diagonal; lower it",
                ("min_distance",),
            )
        room = self.height * self.width / max(1.0, math.pi * self.min_distance**2 / 4)
        if self.most_points > room / 4:
            raise PixelregError(
                f"{self.most_points} points with min_distance {self.min_distance:g} do not fit in a "
                f"{self.height}x{self.width} image; lower one of them",
                ("min_distance",),
            )

    def _check_psf(self) -> None:
        """A PSF file only under the camera model, readable, and the depths within its planes."""
        if not self.psf:
            if self.z != 0 or self.z_max is not None:
                raise PixelregError("--z needs a measured PSF (--psf)", ("z",))
            return
        if not self.camera_model:
            raise PixelregError("a measured PSF (--psf) renders photons: give --photons too", ("psf",))
        low, high = self.z, self.z if self.z_max is None else self.z_max
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            raise PixelregError(f"z {low:g}:{high:g} is not a range LO:HI with LO <= HI", ("z",))
        first, last = self.sampled_psf.z_range  # type: ignore[union-attr]  # psf is set
        if low < first - 1e-6 or high > last + 1e-6:
            raise PixelregError(
                f"z {low:g}:{high:g} reaches beyond the PSF's planes, {first:g} to {last:g} nm", ("z",)
            )

    @property
    def sampled_psf(self) -> SampledPSF | None:
        """The measured PSF the spec names, None for a Gaussian."""
        if not self.psf:
            return None
        from pixelreg.simulate.psf import SampledPSF  # torch: imported only where a PSF is named

        return SampledPSF.load(self.psf)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def camera_model(self) -> bool:
        """Whether images are photon counts through a camera (uint16 ADU), not grey levels."""
        return self.photons > 0

    @property
    def mean_blur(self) -> float:
        """The middle of the spots' sigmas: --blur, or the middle of its range."""
        return (self.blur + (self.blur_max or self.blur)) / 2

    @property
    def middle_z(self) -> float:
        """The middle of the spots' depths, nm: --z, or the middle of its range."""
        return (self.z + (self.z if self.z_max is None else self.z_max)) / 2

    @property
    def depth_range(self) -> tuple[float, float] | None:
        """The depths (nm) a counting model learns to read: the --z range, where the PSF's shape
        tells a spot's depth (an astigmatic PSF, `SampledPSF.tells_depth`); None: 2D data."""
        psf = self.sampled_psf
        if psf is None or self.z_max is None or self.z_max <= self.z or not psf.tells_depth:
            return None
        return self.z, self.z_max

    @property
    def equivalent_sigma(self) -> float:
        """The spots' Gaussian sigma (px): the middle of --blur, or a measured PSF's
        Gaussian-equivalent width at the middle depth (ThunderSTORM's `sigma [nm]`)."""
        psf = self.sampled_psf
        return self.mean_blur if psf is None else psf.gaussian_sigma(self.middle_z)

    @property
    def camera(self) -> Camera:
        """The detector of the camera model (its defaults for grey-level specs)."""
        return Camera.from_values(asdict(self))

    @property
    def image_dtype(self) -> type:
        return np.uint16 if self.camera_model else np.uint8

    @property
    def variable_count(self) -> bool:
        """Whether each image draws its own number of points (--points LO:HI)."""
        return self.points_max is not None

    @property
    def most_points(self) -> int:
        """The most points an image holds: the K of the (N, K, 2) points array."""
        return self.points if self.points_max is None else self.points_max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "the dataset spec") -> DataSpec:
        """The spec stored in a file, each field checked; errors name `where`."""
        values = fields_from(cls, data, where)
        try:
            return cls(**values)
        except PixelregError as exc:
            raise PixelregError(f"{where}: {exc}") from None

    def with_(self, **changes: Any) -> DataSpec:
        return replace(self, **changes)


def parse_count(text: str) -> tuple[int, int | None]:
    """'3' -> (3, None): exactly 3 points; '0:10' -> (0, 10): 0 to 10 per image; '4:4' -> (4, None)."""
    return _value_or_range(text, int, "--points must be K or LO:HI (whole numbers)")


def parse_range(text: str, flag: str) -> tuple[float, float | None]:
    """'1.5' -> (1.5, None): every spot the same; '0.9:1.3' -> (0.9, 1.3): drawn per spot or image."""
    return _value_or_range(text, float, f"{flag} must be a number or a range LO:HI")


def _value_or_range(text: str, kind: type, wanted: str) -> tuple[Any, Any]:
    """(value, None) from 'V', (LO, HI) from 'LO:HI' (LO:LO is a value); else `wanted`, as an error."""
    try:
        numbers = [kind(part) for part in text.split(":")]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        return numbers[0], None
    if len(numbers) == 2:
        low, high = numbers
        return (low, None) if low == high else (low, high)
    raise PixelregError(f"{wanted}, got {text!r}")


PHOTON_SCALE = ("e_per_adu", "baseline")  # a default of these changes every photon count read


def _warn_of_defaults(path: Path, estimates: Any) -> None:
    """A `Warning:` for each value of a calibrated spec that `calibrate` could not measure and
    took a default for, where the default changes the photons the model will read."""
    if not isinstance(estimates, dict):
        return
    for name in PHOTON_SCALE:
        found = estimates.get(name)
        if isinstance(found, dict) and found.get("how") == "default":
            value = found.get("value")
            shown = f"{value:.4g}" if isinstance(value, int | float) else "none"
            warnings.warn(
                f"{path}: {name} is a default ({shown}), not measured: the photons the "
                f"model reads scale with it; give calibrate --{name.replace('_', '-')} if you know it",
                RuntimeWarning,
                stacklevel=3,
            )


MOST_SPEC_BYTES = 256 * 1024  # a spec's options take a few hundred bytes


def read_spec(path: Path) -> DataSpec:
    """The DataSpec a spec JSON file holds (as `calibrate` writes, or under `spec` as `generate
    --json` prints), every field checked; fields it lacks take their defaults."""
    require_file(path, "spec file")
    if path.stat().st_size > MOST_SPEC_BYTES:
        raise PixelregError(
            f"{path} is not a spec: {path.stat().st_size:,} bytes, where a spec is a few hundred "
            f"(at most {MOST_SPEC_BYTES:,})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PixelregError(f"{path} is not a JSON spec ({exc})") from None
    except (RecursionError, ValueError) as exc:  # brackets nested too deep, integers too long
        raise PixelregError(f"{path} is not a JSON spec ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        _warn_of_defaults(path, data.get("estimates"))
        data = data["spec"]
    if not isinstance(data, dict):
        raise PixelregError(f"{path} is not a JSON spec: expected an object of data options")
    if isinstance(data.get("psf"), str) and data["psf"]:  # a PSF file beside the spec
        data = {**data, "psf": str(path.parent / data["psf"])}
    unknown = sorted(set(data) - {spec_field.name for spec_field in fields(DataSpec)})
    if unknown:
        raise PixelregError(f"{path}: unknown field(s) {', '.join(unknown)}; the fields are the data options")
    return DataSpec.from_dict({**DataSpec().to_dict(), **data}, str(path))
