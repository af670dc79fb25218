"""Vigil's stages: one module per stage, each a short class over a pure model or algorithm object."""
