"""Pretrained models at work: GPT-2 writes (text_generation) and BERT fills in blanks (fill_mask)."""
