import sys

from pulse.cli.main import main

sys.exit(main())
