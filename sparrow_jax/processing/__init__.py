"""Numpy input preprocessing (pixels and prompt token expansion) matching Hugging Face processors."""
