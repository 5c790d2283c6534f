"""multiverse-hf: Multiverse (arXiv 2506.09991) for Hugging Face transformers and TRL."""

__version__ = "0.1.0"
