"""migmatrix: a compatibility test matrix for migration streams."""

__version__ = "0.1.0"
