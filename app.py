"""Entry point for Hugging Face Spaces (and `python app.py`): the same as `python -m hub run`.
Settings come from HUB_* environment variables, e.g. HUB_DEMOS or HUB_PRESET=tiny."""

from hub.cli import main

if __name__ == "__main__":
    main()
