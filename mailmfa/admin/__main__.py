"""`python -m mailmfa.admin` = the `mailmfa` command."""

import sys

from mailmfa.admin.cli import main

sys.exit(main())
