"""Files: frames in (PNG, npy, TIFF), localization tables in and out, datasets, checkpoints, run
directories, and atomic writes (a reader never sees a half-written file)."""
