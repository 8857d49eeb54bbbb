#!/bin/sh
# Build mailmfa_<version>_all.deb from this checkout, with dpkg-deb alone (no debhelper, no
# network): Debian's own python3-* packages provide the dependencies, so an admin installs
# with `apt install ./dist/mailmfa_<version>_all.deb` and never runs pip against the system
# Python (Debian 12 and 13 refuse that: PEP 668, "externally-managed-environment").
#   usage: packaging/build-deb.sh [OUTDIR]        (default: dist/; prints the .deb's path)
# Layout of the package (README, "Install"):
#   /usr/lib/python3/dist-packages/mailmfa/   the library (sources; postinst compiles them)
#   /usr/bin/mailmfa-checkpassword            the -ISB shim (checkpassword/), the per-login program
#   /usr/bin/mailmfa-pam                      symlink to it (the name picks the program)
#   /usr/bin/mailmfa, mailmfa-web, mailmfa-authd   from setup.cfg's console_scripts
#   /etc/mailmfa/mailmfa.toml                 conffile (conf/mailmfa.toml)
#   /etc/logrotate.d/mailmfa, /var/log/mailmfa/   pam_exec's log of mailmfa-pam
#   /usr/lib/systemd/system/mailmfa-authd.service  not enabled: it needs the config first
#   /usr/share/mailmfa/conf/                  everything else under conf/ (Dovecot, Lua, LDAP, PAM, nginx)
#   /usr/share/doc/mailmfa/                   README.md, copyright, changelog.gz
#   /usr/share/lintian/overrides/mailmfa      why two permissions differ from the defaults
#   /usr/share/man/man8/                      a page per program, from its --help (help2man)
set -eu
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
VERSION=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' mailmfa/__init__.py)
[ -n "$VERSION" ] || { echo "build-deb: no __version__ in mailmfa/__init__.py" >&2; exit 1; }
CHANGELOG_VERSION=$(sed -n '1s/^mailmfa (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[ "$CHANGELOG_VERSION" = "$VERSION" ] || {
  echo "build-deb: packaging/debian/changelog starts with ${CHANGELOG_VERSION:-no version}, mailmfa/__init__.py says $VERSION: add a changelog entry for $VERSION" >&2
  exit 1
}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT INT TERM
umask 022
R=$STAGE/root

# the library: the package's files only (no __pycache__, no editor leftovers)
PKG=$R/usr/lib/python3/dist-packages
mkdir -p "$PKG"
find mailmfa \( -name '*.py' -o -path 'mailmfa/web/templates/*.html' -o -path 'mailmfa/web/static/*.css' \) \
  -type f | while read -r f; do install -D -m 0644 "$f" "$PKG/$f"; done

# programs
install -D -m 0755 checkpassword/mailmfa-checkpassword "$R/usr/bin/mailmfa-checkpassword"
ln -s mailmfa-checkpassword "$R/usr/bin/mailmfa-pam"
# console scripts other than the two per-login programs, from setup.cfg (one list to keep);
# and for all of them a build-time twin that imports from this checkout, for help2man below
mkdir -p "$STAGE/bin"
/usr/bin/python3 - "$R/usr/bin" "$STAGE/bin" "$(pwd)" <<'EOF'
import configparser
import os
import sys

installed, build, repo = sys.argv[1:]
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
    name, _, target = (part.strip() for part in line.partition("="))
    module, func = target.split(":")
    # -I: no PYTHONPATH, user site or current directory (run by root, by services)
    body = f"import sys\n\nfrom {module} import {func}\n\nsys.exit({func}())\n"
    scripts = [(build, f"#!/usr/bin/python3 -I\nimport sys\nsys.path.insert(0, {repo!r})\n" + body)]
    if name not in ("mailmfa-checkpassword", "mailmfa-pam"):  # those two are the shim above
        scripts.append((installed, "#!/usr/bin/python3 -I\n" + body))
    for where, text in scripts:
        with open(f"{where}/{name}", "w") as fh:
            fh.write(text)
        os.chmod(f"{where}/{name}", 0o755)
EOF

# manual pages from each program's --help and --version (help2man; Debian: apt install help2man)
if command -v help2man >/dev/null 2>&1; then
  mkdir -p "$R/usr/share/man/man8"
  printf '[SEE ALSO]\nThe full manual: /usr/share/doc/mailmfa/README.md; example configuration in\n/usr/share/mailmfa/conf.\n' \
    > "$STAGE/see-also.h2m"
  while IFS='|' read -r name summary; do
    help2man --no-info --section=8 --name="$summary" --include="$STAGE/see-also.h2m" \
      --output="$STAGE/$name.8" "$STAGE/bin/$name"
    gzip -9n < "$STAGE/$name.8" > "$R/usr/share/man/man8/$name.8.gz"
    chmod 0644 "$R/usr/share/man/man8/$name.8.gz"
  done <<'EOF'
mailmfa-checkpassword|two-step verification for Dovecot's checkpassword passdb
mailmfa-pam|two-step verification for PAM services through pam_exec
mailmfa|manage users' two-step verification (TOTP) for mail logins
mailmfa-web|the self-service page for two-step verification
mailmfa-authd|resident two-step verification daemon for mail logins
EOF
else
  echo "build-deb: help2man not installed: the package gets no manual pages" >&2
fi

# configuration, unit, examples, documentation
install -D -m 0640 conf/mailmfa.toml "$R/etc/mailmfa/mailmfa.toml"
install -D -m 0644 packaging/mailmfa-authd.service "$R/usr/lib/systemd/system/mailmfa-authd.service"
install -D -m 0644 packaging/debian/logrotate "$R/etc/logrotate.d/mailmfa"
# pam_exec cannot open log=/var/log/mailmfa/pam.log without it, and then refuses every login
install -d -m 0750 "$R/var/log/mailmfa"
find conf -type f ! -name mailmfa.toml | while read -r f; do install -D -m 0644 "$f" "$R/usr/share/mailmfa/$f"; done
install -D -m 0644 README.md "$R/usr/share/doc/mailmfa/README.md"
install -D -m 0644 packaging/debian/copyright "$R/usr/share/doc/mailmfa/copyright"
gzip -9n < packaging/debian/changelog > "$R/usr/share/doc/mailmfa/changelog.gz"
chmod 0644 "$R/usr/share/doc/mailmfa/changelog.gz"
install -D -m 0644 packaging/debian/lintian-overrides "$R/usr/share/lintian/overrides/mailmfa"

# control area
mkdir -p "$R/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "packaging/debian/$f" "$R/DEBIAN/$f"; done
printf "%s\n" /etc/mailmfa/mailmfa.toml /etc/logrotate.d/mailmfa > "$R/DEBIAN/conffiles"
# md5sums of everything but the conffiles (dpkg keeps theirs itself), for debsums/dpkg --verify
(cd "$R" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print | sed 's|^\./||' |
  LC_ALL=C sort | xargs md5sum) > "$R/DEBIAN/md5sums"
SIZE=$(du -sk --exclude=DEBIAN "$R" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$SIZE/" packaging/debian/control > "$R/DEBIAN/control"

DEB=$OUT/mailmfa_${VERSION}_all.deb
dpkg-deb --root-owner-group -Zxz --build "$R" "$DEB" >/dev/null
echo "$DEB"
