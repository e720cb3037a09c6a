"""Reading the test database directly, from outside any app (after a server has gone)."""
from __future__ import annotations

import sqlite3


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the database directly (after a server has gone): `%s` placeholders on both backends."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.split(":///", 1)[1])
        try:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()
    import psycopg2

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()
