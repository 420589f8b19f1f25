"""Neural networks: architectures, the readout of their output maps, augmentation, the model
registry, the training loop and inference (device, precision, batching).

A module that runs a trained model never imports the training loop (`train.py`).
"""
