"""Vision: a Vision Transformer names what is in a photo (image_classification) and shows where it looked
(vit_attention, shown by vit_attention_section); tab.py is the tab that shows both."""
