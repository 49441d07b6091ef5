"""Inside the models: what each layer would predict (the logit lens in layers, how data flows through the model in
data_flow, their tab layers_tab) and how word order gets in (the encodings in positional_encoding, the experiment
in word_order, their tab positional_encoding_tab)."""
