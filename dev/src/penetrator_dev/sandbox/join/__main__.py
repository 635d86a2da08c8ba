import sys

from penetrator_dev.sandbox.join.program import main

sys.exit(main())
