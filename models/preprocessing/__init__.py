"""Pre-processing that is part of a model's contract: filtering, segmentation, lead order, rhythm features.

The stream, training and the dashboard all feed models through these functions, so a model sees the same
inputs online as it did when it was trained. Pure numpy/scipy; imports nothing above ``models``.
"""
