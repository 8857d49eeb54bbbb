"""mailmfa: two-step verification for mail servers.

Deliberately imports nothing: every per-login process pays for each import.
"""

__version__ = "0.1.0"
