"""Pretrained models at work: GPT-2 writes (text_generation, its tab text_generation_tab) and BERT fills in blanks
(fill_mask: the model, the work and the tab in one module)."""
