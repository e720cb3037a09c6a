"""Plain-Python services: auth, keys, channels, prices, routing, accounting. No flask.request here."""
