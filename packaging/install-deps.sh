#!/bin/sh
# Installs the Debian packages mailmfa's demo and tests use, only when one is missing.
# Debian 12 (bookworm) and 13 (trixie). Starts no service: the demo and the tests run
# their own slapd and Dovecot on loopback.
set -eu
PKGS="slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-auth-lua lua-socket dovecot-ldap
python3 python3-venv python3-pip python3-setuptools python3-wheel
python3-ldap3 python3-ldap python3-pyotp python3-pampy python3-pytest python3-hypothesis
python3-segno python3-flask python3-cryptography chromium nginx-light pamtester libpam-python libpam-modules
sasl2-bin help2man lintian"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages:$missing -- run as root: apt-get install$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Without this, slapd's package builds a directory of its own for dc=<hostname>.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
# Keep package scripts from starting slapd/dovecot system services.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
fi
apt-get update -q
# A package this release does not have (e.g. libpam-python on a newer Debian) is reported
# and skipped; the tests that need it skip with that reason instead of failing the install.
available=""
for p in $missing; do
  if apt-cache show "$p" >/dev/null 2>&1; then available="$available $p"
  else echo "install-deps: $p is not available on this release; skipping it" >&2; fi
done
# shellcheck disable=SC2086
[ -n "$available" ] && apt-get install -y -q --no-install-recommends $available
[ -n "$made_policy" ] && rm -f "$policy"
exit 0
