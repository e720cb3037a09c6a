# gunicorn -c gunicorn.conf.py  (settings live in app/gunicorn_config.py so `octorelay up` finds them when installed)
from app.gunicorn_config import *  # noqa: F401,F403
