"""Inside the models: what each layer would predict (layers) and how word order gets in (the encodings in
positional_encoding, the experiment in word_order, their tab positional_encoding_tab)."""
