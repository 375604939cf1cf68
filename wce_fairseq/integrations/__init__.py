"""The loss for other training frameworks (``hf``: Hugging Face Transformers)."""
