"""The API's routers, one per concern: `predict` (prediction and explanation), `model` (the
run's description and its test digits) and `page` (the drawing page and its files)."""
