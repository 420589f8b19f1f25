"""A lab's archive rather than one movie: `predict` in chunks of frames, each chunk's
localizations kept in a work folder until the table is assembled (`work`), run in this process
or on a Dask cluster of processes and machines (`cluster`)."""
