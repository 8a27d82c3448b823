"""Tile sources: TFDS, a folder or .zip of class subfolders, and an offline synthetic set."""
