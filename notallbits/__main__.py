import sys

from notallbits.cli import main

sys.exit(main())
