"""Triton Python backends shipped into generated repositories. Each is a thin `model.py`; the logic lives in `repoforge.runtime`."""
