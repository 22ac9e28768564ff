"""Readers of other tools' files (PyTorch, NumPy), without their frameworks and without running their code."""
