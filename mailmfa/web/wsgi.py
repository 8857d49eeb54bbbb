"""WSGI entry for gunicorn/uwsgi: `gunicorn -b 127.0.0.1:8080 mailmfa.web.wsgi:application`.

The configuration file comes from $MAILMFA_CONFIG (default /etc/mailmfa/mailmfa.toml).
"""

from __future__ import annotations

from mailmfa.config import load, resolve_path
from mailmfa.web.app import create_app

application = create_app(load(resolve_path()))
