import sys

from chexmask_u_tools.cli import main

sys.exit(main())
