"""TLS to the directory: StartTLS with a verified certificate works; a certificate the
configured CA did not sign is a temporary failure, never a plaintext fallback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mfa import code_at, new_secret, run_checkpassword, write_config
from servers import wait_for_step_safe


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca_and_cert(d: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (IP SAN) signed by it."""
    ca_key, ca, key, csr, cert = (d / f"{name}-{x}" for x in ("ca.key", "ca.pem", "key.pem", "csr.pem", "cert.pem"))
    # keyUsage on the CA: Python 3.13 verifies with VERIFY_X509_STRICT, which refuses a CA
    # certificate without it ("CA cert does not include key usage extension")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(ca_key), "-out", str(ca))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext = d / f"{name}-ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    for p in (ca, key, cert):
        p.chmod(0o644)
    return ca, cert, key


@pytest.fixture(scope="module")
def tls_slapd(slapd_factory, workdir):
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    server = slapd_factory()
    ca, cert, key = make_ca_and_cert(workdir, "good")
    server.ldapmodify_config(
        "dn: cn=config\nchangetype: modify\n"
        f"replace: olcTLSCACertificateFile\nolcTLSCACertificateFile: {ca}\n-\n"
        f"replace: olcTLSCertificateFile\nolcTLSCertificateFile: {cert}\n-\n"
        f"replace: olcTLSCertificateKeyFile\nolcTLSCertificateKeyFile: {key}\n")
    return server, ca


@pytest.fixture(scope="module")
def ldaps_uri(tls_slapd):
    """The same slapd also listening for ldaps:// (TLS from the first byte)."""
    from servers import free_port

    server, _ = tls_slapd
    uri = f"ldaps://127.0.0.1:{free_port()}"
    server.extra_listeners = [uri + "/"]
    server.restart()
    return uri


def _toml_str(p: Path) -> str:
    return f'"{p}"'


def test_starttls_with_verified_certificate(tls_slapd, workdir):
    server, ca = tls_slapd
    cfg = write_config(workdir, server, "tls.toml", extra_ldap=f"starttls = true\nca_file = {_toml_str(ca)}")
    secret = new_secret()
    server.add_user("tlsuser", "tlspw", secret)
    wait_for_step_safe()
    proc = run_checkpassword(cfg, "tlsuser", "tlspw" + code_at(secret))
    assert proc.returncode == 0, proc.stderr
    assert "reason=ok" in proc.stderr
    log = server.log_text()
    assert "STARTTLS" in log and "TLS established" in log, log[-2000:]


def test_starttls_with_a_certificate_from_another_ca_is_temporary(tls_slapd, workdir):
    server, _ = tls_slapd
    other_ca, _, _ = make_ca_and_cert(workdir, "other")
    cfg = write_config(workdir, server, "badca.toml", extra_ldap=f"starttls = true\nca_file = {_toml_str(other_ca)}")
    secret = new_secret()
    server.add_user("tlsuser2", "tlspw", secret)
    wait_for_step_safe()
    proc = run_checkpassword(cfg, "tlsuser2", "tlspw" + code_at(secret))
    assert proc.returncode == 111, proc.stderr
    assert "reason=ldap_unavailable" in proc.stderr
    # nothing was recorded: the code is still unused
    assert not server.token_state("tlsuser2").first("oathTOTPLastTimeStep")


def test_ldaps_with_verified_certificate(tls_slapd, ldaps_uri, workdir):
    server, ca = tls_slapd
    cfg = write_config(workdir, server, "ldaps.toml", uris=[ldaps_uri], extra_ldap=f"ca_file = {_toml_str(ca)}")
    secret = new_secret()
    server.add_user("tlsuser3", "tlspw", secret)
    wait_for_step_safe()
    proc = run_checkpassword(cfg, "tlsuser3", "tlspw" + code_at(secret))
    assert proc.returncode == 0, proc.stderr


def test_ldaps_with_a_certificate_from_another_ca_is_temporary(tls_slapd, ldaps_uri, workdir):
    server, _ = tls_slapd
    other_ca = workdir / "other-ca.pem"
    if not other_ca.exists():
        other_ca, _, _ = make_ca_and_cert(workdir, "other2")
    cfg = write_config(workdir, server, "ldaps-bad.toml", uris=[ldaps_uri],
                       extra_ldap=f"ca_file = {_toml_str(other_ca)}")
    proc = run_checkpassword(cfg, "tlsuser3", "tlspw123456")
    assert proc.returncode == 111 and "reason=ldap_unavailable" in proc.stderr


def test_starttls_with_ldaps_uri_is_a_config_error(tls_slapd, ldaps_uri, workdir):
    server, ca = tls_slapd
    cfg = write_config(workdir, server, "both.toml", uris=[ldaps_uri], extra_ldap="starttls = true")
    proc = run_checkpassword(cfg, "tlsuser3", "tlspw123456")
    assert proc.returncode == 111 and "reason=config_error" in proc.stderr and "starttls" in proc.stderr
