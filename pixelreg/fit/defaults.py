"""The fit package's defaults that the command line shows, without importing torch."""

from __future__ import annotations

# Below this blur (px) a spot hardly changes the image as it moves within its pixel: the bound
# on unbiased estimators grows without limit there and says nothing a user can compare with.
MIN_BOUND_BLUR = 0.5

CALIBRATION_FRAMES = 200  # `calibrate` reads at most this many frames, the first of the files
CALIBRATION_SIDE = 512  # larger frames are calibrated on their central square of this side
MOST_BEAD_PLANES = 1000  # a bead z-stack's planes read, at most
PSF_MODELS = ("auto", "gaussian", "measured")  # where the PSF to train on comes from without beads
