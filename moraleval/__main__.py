import sys

from moraleval.cli import main

sys.exit(main())
