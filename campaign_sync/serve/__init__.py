"""`campaign-sync serve`: the read-only HTTP service (JSON API, metrics, status page).

app.py routes requests to the documents the status commands print; server.py runs it on
waitress (the optional `serve` extra, imported only by `serve`); page.py draws the status
page. Nothing here writes to the store, the work folder or the config.
"""
