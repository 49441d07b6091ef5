"""Multimodal: CLIP matches an image to any words (zero_shot) and shows which patches made each match (relevance)."""
