"""mailmfa-authd: the resident authentication daemon and its wire protocol.

Imports nothing: the per-login client imports mailmfa.daemon.protocol only.
"""
