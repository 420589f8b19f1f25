"""Fitting spots to pixels: the PSF and its windows, the Cramér-Rao bounds,
classical localizers (and peers' where installed), photometry, joint fits of neighbours, PSFs
measured from beads or a movie's spots, and the calibration of a camera from its own frames.
"""
