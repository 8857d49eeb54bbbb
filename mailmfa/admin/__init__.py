"""The admin side: the `mailmfa` command (cli.py). Never imported by the login path."""
