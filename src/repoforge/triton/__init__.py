"""Triton names, the spec <-> config.pbtxt codec, the repository reader and writer."""
