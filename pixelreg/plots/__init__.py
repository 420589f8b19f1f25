"""Figures: one function per figure, matplotlib with the Agg backend, each PNG written atomically."""
