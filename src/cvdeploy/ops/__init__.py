"""Numerical building blocks: letterbox geometry, box conversions and non-maximum suppression."""
