"""Fitting spots to pixels: the PSF and its windows, the Cramér-Rao bounds,
classical localizers (and peers' where installed), photometry, joint fits of neighbours and
the calibration of a camera from its own frames.
"""
