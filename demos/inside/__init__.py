"""Inside the models: what each layer would predict (layers) and how word order gets in (positional_encoding)."""
