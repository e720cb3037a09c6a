"""Numbered schema migrations, applied in order by `octorelay db upgrade`.

Each file holds frozen table definitions (never the app's models) so that
upgrading an old database always replays the same steps.
"""
