"""darkbp: Darknet-style .cfg networks in NumPy.

Parse a cfg, print Darknet's layer table, train with vectorised backprop and
check every gradient numerically.
"""

__version__ = "0.1.0"
