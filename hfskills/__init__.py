"""hfskills: turn any Hugging Face model into a served, hardware-accelerated endpoint."""

__version__ = "0.1.0"
