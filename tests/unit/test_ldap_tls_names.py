"""match_ip_or_name: the server-name check ldap3 uses on Python >= 3.12 (see its docstring)."""

from __future__ import annotations

import pytest
from ldap3.core.tls import CertificateError

from mailmfa.backends.ldap import match_ip_or_name

CERT = {"subjectAltName": (("DNS", "ldap.example.org"), ("IP Address", "192.0.2.10"),
                           ("IP Address", "2001:DB8:0:0:0:0:0:1\n"))}


def _names(cert: dict, hostname: str) -> None:
    if ("DNS", hostname) not in cert["subjectAltName"]:
        raise CertificateError(f"no DNS name {hostname}")


@pytest.mark.parametrize("host", ["192.0.2.10", "2001:db8::1", "[2001:db8::1]", "ldap.example.org"])
def test_names_and_addresses_in_the_certificate_match(host: str) -> None:
    match_ip_or_name(CERT, host, _names)


@pytest.mark.parametrize("host", ["192.0.2.11", "2001:db8::2", "other.example.org", "192.0.2.1"])
def test_anything_else_is_refused(host: str) -> None:
    with pytest.raises(CertificateError):
        match_ip_or_name(CERT, host, _names)


def test_an_address_never_matches_a_dns_name_or_the_common_name() -> None:
    cert = {"subject": ((("commonName", "192.0.2.10"),),), "subjectAltName": (("DNS", "192.0.2.10"),)}
    with pytest.raises(CertificateError):
        match_ip_or_name(cert, "192.0.2.10", _names)
