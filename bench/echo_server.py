"""The do-nothing round trip's server: a Gradio app whose endpoints return at once (text, and an uploaded image),
in a process of its own, so that the benchmarks measure Gradio's cost alone. Prints {"url": ...} once it serves."""

import json
import sys

import gradio as gr

if __name__ == "__main__":
    with gr.Blocks() as app:
        box, image = gr.Textbox(), gr.Image(type="filepath")
        box.submit(lambda text: text, box, box, api_name="echo")
        image.upload(lambda file: "ok", image, box, api_name="image_echo", preprocess=False)
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    print(json.dumps({"url": url}), flush=True)
    sys.stdin.read()  # serves until the benchmark closes this pipe, or ends without closing it
