"""Headless core: sequence model, spatial transforms, losses, engines, metrics, phantom.

Pure numpy/torch; nothing here imports Qt or napari.
"""
