"""mailmfa-web: serve the self-service page (quick start, or behind nginx on loopback).

For production traffic run the same app under a WSGI server (gunicorn, uwsgi) with
mailmfa.web.wsgi:application; this command uses werkzeug's threaded server, which is
enough for a few hundred users changing a setting now and then.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CONFIG = 78

EPILOG = """\
exit status:
  0   stopped normally (or --check: configuration usable)
  2   usage error (bad option, bad --listen value, address in use)
  78  configuration error (file, key or state_dir named in the message), or a
      package the page needs is not installed (named in the message)

Configuration: [ldap] (or [store]/[password] in single-host mode), [totp], [policy] and [web]
of mailmfa.toml (see conf/mailmfa.toml, conf/mailmfa-single-host.toml).
Put it behind a TLS reverse proxy (conf/nginx/mailmfa-web.conf); with secure_cookies = true
(the default) browsers send the session cookie over https only.
"""


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:8080" or "[::1]:8080" -> (host, port); ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


# module -> Debian package; checked at start so a missing one is a clear error now, not a
# traceback at the first page (flask) or an error page at the first enrolment (cryptography,
# segno: imported only when used)
REQUIRED = (("flask", "python3-flask"), ("cryptography.hazmat.primitives.ciphers.aead", "python3-cryptography"),
            ("segno", "python3-segno"))


def missing_packages() -> list[str]:
    """The Debian packages of REQUIRED modules that cannot be imported."""
    import importlib

    missing = []
    for module, package in REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailmfa-web",
        description="Self-service page where mailbox users turn 2-step verification on and off.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="address to serve on (default: 127.0.0.1:8080)")
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $MAILMFA_CONFIG, else /etc/mailmfa/mailmfa.toml)")
    p.add_argument("--check", action="store_true",
                   help="load the configuration, read the secret file, open the session store, then exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    from mailmfa import log
    from mailmfa.config import ConfigError, load, resolve_path

    args = build_parser().parse_args(argv)
    if args.version:
        from mailmfa import __version__

        print(f"mailmfa-web {__version__}")
        return EXIT_OK
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"mailmfa-web: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = missing_packages()
    if missing:
        print(f"mailmfa-web: needs {', '.join(missing)}: apt install {' '.join(missing)}", file=sys.stderr)
        return EXIT_CONFIG
    path = resolve_path(args.config)
    try:
        config = load(path)
        config.check_secret_readable()
        from mailmfa.web.app import create_app
        from mailmfa.web.sessions import StateDirError

        try:
            app = create_app(config)
        except StateDirError as exc:
            raise ConfigError(f"{path}: [web] {exc}") from None
    except ConfigError as exc:
        print(f"mailmfa-web: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"mailmfa-web: {path}: configuration usable")
        return EXIT_OK
    if not config.web.secure_cookies:
        print("mailmfa-web: warning: [web] secure_cookies = false: the session cookie is sent over "
              "plain http too (development only)", file=sys.stderr)

    from werkzeug.serving import make_server

    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        print(f"mailmfa-web: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    log.emit({"service": "web", "event": "listening", "listen": f"{host}:{server.server_port}",
              "config": path})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
