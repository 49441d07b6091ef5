"""Attention: every head's map over the typed text (maps) and switching heads off to see what they did (head_ablation)."""
