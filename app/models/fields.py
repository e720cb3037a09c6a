"""Column types peewee lacks on every backend alike."""
import json

from peewee import TextField


class JSONField(TextField):
    """JSON stored as text: the same on SQLite and PostgreSQL, compact on disk."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)
