"""nlpmon: observability and drift monitoring for NLP and LLM features in production."""

__version__ = "0.1.0"
