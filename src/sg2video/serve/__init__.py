"""A local page for writing a scene graph, watching its videos, editing it and regenerating (`src/serve.py`).

`app` (HTTP server and endpoints), `jobs` (the one-at-a-time generation queue), `requests` (what a request may
hold, checked with sample.py's rules and messages), `results` (what is shown and downloadable of a sample),
`static/` (the page: plain HTML, CSS and JavaScript, no asset from elsewhere).
"""
