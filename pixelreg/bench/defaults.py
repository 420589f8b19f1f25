"""Each bench's settings and goals, without importing torch: the command line shows them as defaults."""

from __future__ import annotations

BENCH_HOLDOUTS = ("random", "quadrant")  # the holdouts `pixelreg bench` compares by default
BENCH_EPOCHS = 30  # every model's budget in `pixelreg bench`

# `pixelreg bench precision`: spots anywhere within a pixel, in noise of 10 grey levels over a
# background of 50, over a grid of blur and brightness (brighter than 1000 saturates 8-bit images
# at blur 1). Each model is trained per cell and set against the classical methods and the bound.
PRECISION_BLURS = (1.0, 1.5, 2.0)
PRECISION_BRIGHTNESSES = (250.0, 500.0, 1000.0)
PRECISION_CONDITIONS = {"subpixel": True, "noise": 10.0, "background": 50.0}
PRECISION_MODELS = ("offsets", "heatmap")
PRECISION_N = 20_000  # images per cell: 16,000 to train on, 2,000 to validate, 2,000 to test
PRECISION_EPOCHS = 15
AT_BOUND = 1.05  # the goal: rmse within 5% of the bound


# `pixelreg bench density`: a counting model against the classical detectors (and trackpy, when
# installed) from sparse to dense images of 64x64, where blurred spots overlap; scored by the
# SMLM challenge's Jaccard index and efficiency. Bright spots (1000 grey levels summed, blur 1)
# in noise 10 over a background of 50, as in the precision grid.
DENSITY_RANGES = ("0:10", "10:30", "30:60")
# each density's model trains on images of LO to at least this many spots per 64x64 pixels (in
# proportion to the area): sparse images hold too few close pairs to learn to tell them apart from
DENSITY_TRAINING_MOST = 30
DENSITY_CONDITIONS = {"subpixel": True, "noise": 10.0, "background": 50.0, "blur": 1.0, "brightness": 1000.0}
DENSITY_SIZE = 64
DENSITY_N = 10_000  # images per density: 8,000 to train on, 1,000 to validate, 1,000 to test
DENSITY_EPOCHS = 15
DENSITY_LEAD = 0.10
MOVIE_FRAMES = 200
MOVIE_SIZE = 512
MOVIE_SPOTS = 600  # about this many spots per frame (+-10%)
# `pixelreg bench movie`: an sCMOS-like camera, bright and dim spots at blur 1
MOVIE_CONDITIONS = {
    "photons": 300.0,
    "photons_max": 3000.0,
    "background_photons": 10.0,
    "blur": 1.0,
    "read_noise": 1.5,
    "e_per_adu": 0.5,
    "baseline": 100.0,
}
MOVIE_TRAIN_SIZE = 64  # the movie's model trains on crops of this side ...
MOVIE_TRAIN_N = 10_000  # ... this many of them ...
MOVIE_EPOCHS = 10
MOVIE_STRIDE = 2  # ... reading cells of 2x2 pixels, four times faster than pixel by pixel
MOVIE_CHANNELS = 24
MOVIE_TUNING_FRAMES = 10  # trackpy's minmass is chosen on this many frames  # the goal: a Jaccard index 10 points above the best classical detector
CALIBRATION_EPOCHS = 15  # bench calibration trains this long (README's workflow too): 4 to 5 min a model
