"""Synthetic data: what a dataset is made of and how it is rendered.

Owns the data spec (`DataSpec`, the one source of every data option), the keyed random
streams, the pixel <-> normalised coordinates, where points fall and how splits keep positions
apart, PSF models (a sampled 3-D PSF, the scalar pupil PSF), the rendering of spots (grey
levels or photons through a camera), the camera model, and movies made the way other tools make
them (for the benches).
"""
