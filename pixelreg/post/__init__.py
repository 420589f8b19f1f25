"""After localization: a table in, a better table (or a measure of it) out.

`drift` estimates and removes the stage's drift, `merge` joins a molecule's localizations in
consecutive frames into one, `filter` keeps the rows within given ranges, and `resolution`
measures the result by Fourier ring correlation and by NeNA. Each takes and returns
`Localizations` (pixels, frames 0-based, as one movie).
"""
