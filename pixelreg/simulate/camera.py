"""The camera model: photons to A/D counts and back, and the noise a detector adds on the way."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelreg.errors import PixelregError

ADU_MAX = 65535  # images are uint16
MOST_EM_GAIN = 10_000.0  # EMCCDs reach about 1,000
MOST_READ_NOISE = 1_000.0  # electrons rms: noisier than any scientific camera
E_PER_ADU_RANGE = (1e-3, 1e4)  # photoelectrons per count: far beyond real converters either way
CAMERA_FIELDS = ("qe", "em_gain", "read_noise", "e_per_adu", "baseline")


CAMERA_LIMITS: dict[str, tuple[Callable[[float], bool], str]] = {
    "qe": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "em_gain": (
        lambda v: v == 0.0 or 1.0 <= v <= MOST_EM_GAIN,
        f"0 (no EM register) or 1 to {MOST_EM_GAIN:g}",
    ),
    "read_noise": (lambda v: 0.0 <= v <= MOST_READ_NOISE, f"0 to {MOST_READ_NOISE:g} electrons rms"),
    "e_per_adu": (
        lambda v: E_PER_ADU_RANGE[0] <= v <= E_PER_ADU_RANGE[1],
        f"{E_PER_ADU_RANGE[0]:g} to {E_PER_ADU_RANGE[1]:g} photoelectrons per count",
    ),
    "baseline": (lambda v: 0.0 <= v < ADU_MAX, f"0 to {ADU_MAX - 1} ADU (images are 16-bit)"),
}


def check_camera_values(**values: float | None) -> None:
    """Refuse the first camera value (by its name in CAMERA_FIELDS; None: not given) out of its
    range, NaN included: the one check of every camera value, from a spec, a checkpoint or a
    command's options."""
    for name, value in values.items():
        within, rule = CAMERA_LIMITS[name]
        if value is not None and not within(float(value)):
            raise PixelregError(f"{name} must be {rule}, got {float(value):g}", (name,))


@dataclass(frozen=True)
class Camera:
    """A photon-counting detector: sCMOS or CCD (em_gain 0 or 1), or EMCCD (em_gain > 1)."""

    qe: float = 1.0  # quantum efficiency: photoelectrons per photon
    em_gain: float = 0.0  # electron multiplication; 0 or 1: no EM stage
    read_noise: float = 0.0  # electrons rms, after any EM gain
    e_per_adu: float = 1.0  # electrons per A/D count
    baseline: float = 0.0  # ADU that a dark pixel reads

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise PixelregError naming the first impossible setting."""
        check_camera_values(**{name: getattr(self, name) for name in CAMERA_FIELDS})

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Camera:
        """The camera of a spec or checkpoint: its fields of CAMERA_FIELDS, the rest ignored."""
        return cls(**{name: float(values[name]) for name in CAMERA_FIELDS if name in values})

    @property
    def gain(self) -> float:
        """Electrons out of the EM register per photoelectron in: 1 without one."""
        return self.em_gain if self.em_gain > 1.0 else 1.0

    @property
    def excess_noise(self) -> float:
        """F^2: the factor by which EM multiplication multiplies the shot noise's variance."""
        return 2.0 if self.em_gain > 1.0 else 1.0

    @property
    def read_variance(self) -> float:
        """The read noise's variance in photoelectrons (before the EM gain) squared."""
        return (self.read_noise / self.gain) ** 2

    def background_std(self, background: float) -> float:
        """The standard deviation, in photons, of a pixel that holds `background` photons."""
        electrons = self.qe * max(background, 0.0) * self.excess_noise + self.read_variance
        return math.sqrt(electrons) / self.qe

    def expose(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint16 ADU images from expected photons per pixel, each noise drawn from `rng`."""
        electrons = rng.poisson(np.clip(photons, 0.0, None) * self.qe).astype(np.float64)
        if self.em_gain > 1.0:  # a sum of `electrons` exponentials of mean em_gain
            positive = electrons > 0
            electrons[positive] = rng.gamma(electrons[positive], self.em_gain)
        if self.read_noise > 0:
            electrons += rng.normal(0.0, self.read_noise, size=electrons.shape)
        adu = self.baseline + electrons / self.e_per_adu
        return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)

    def photons(self, adu: np.ndarray) -> np.ndarray:
        """Photons read back from ADU: (ADU - baseline) * e_per_adu / gain / qe, as float32."""
        return (
            (np.asarray(adu, dtype=np.float32) - self.baseline) * (self.e_per_adu / self.gain / self.qe)
        ).astype(np.float32)
