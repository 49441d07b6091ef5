"""One module per tab: the model it uses, the pure functions that do the work, and the tab that shows them."""
