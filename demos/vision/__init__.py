"""Vision: a Vision Transformer names what is in a photo (image_classification) and shows where it looked (vit_attention)."""
