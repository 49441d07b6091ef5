"""Transformers demo hub: a Gradio app with one tab per transformer demo."""

__version__ = "0.1.0"
