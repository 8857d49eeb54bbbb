# mailmfa — the two commands: `make demo` and `make test`. Both install what is missing.
PY := /usr/bin/python3
# Dovecot runs the checkpassword program as the `dovecot` user, so the venv must sit where
# that user can reach it: here when it can, else under /var/tmp (a checkout under /root is
# closed to it).
VENV ?= $(shell if runuser -u dovecot -- test -x "$(CURDIR)/" 2>/dev/null; then echo "$(CURDIR)/.venv"; else echo "/var/tmp/mailmfa-venv-$$(echo '$(CURDIR)' | md5sum | cut -c1-8)"; fi)
PYTEST_ARGS ?=
RUFF ?= ruff

.PHONY: deps venv test unit demo lint bench deb clean
deps:
	@packaging/install-deps.sh

venv: deps
	@test -x "$(VENV)/bin/python" || $(PY) -m venv --system-site-packages "$(VENV)"
	@"$(VENV)/bin/python" -m pip install -q --no-build-isolation --no-deps --disable-pip-version-check . >/dev/null
	@# the web page's browser tests drive Debian's /usr/bin/chromium; the browser is never downloaded
	@"$(VENV)/bin/python" -c "import playwright" 2>/dev/null || "$(VENV)/bin/python" -m pip install -q --disable-pip-version-check playwright
	@chmod -R a+rX "$(VENV)"
	@# the shim runs this checkout's package as `dovecot`: its .pyc files must exist and be
	@# readable (one written 0600 under Dovecot's umask 0077 would be recompiled every login)
	@find mailmfa -name '*.pyc' ! -perm -o=r -delete
	@umask 022 && $(PY) -m compileall -q mailmfa >/dev/null

test: venv
	"$(VENV)/bin/python" -m pytest -q $(PYTEST_ARGS) tests

unit: venv
	"$(VENV)/bin/python" -m pytest -q tests/unit

demo: venv
	"$(VENV)/bin/python" demo/run.py $(if $(SERVE),--serve,) $(if $(PAM),--pam,) $(if $(DAEMON),--daemon,)

lint:
	$(RUFF) check mailmfa tests checkpassword bench demo

# BENCH_ARGS: e.g. --full (daemon RSS after 100 000 requests) or --seconds 10
# the Debian package: dist/mailmfa_<version>_all.deb (apt install ./dist/mailmfa_*_all.deb)
deb:
	packaging/build-deb.sh dist

bench: venv
	"$(VENV)/bin/python" bench/run.py $(BENCH_ARGS)
	"$(VENV)/bin/python" bench/startup.py
	"$(VENV)/bin/python" bench/authd_cpu.py
	"$(VENV)/bin/python" bench/lua_transport.py

clean:
	rm -rf .venv build *.egg-info
