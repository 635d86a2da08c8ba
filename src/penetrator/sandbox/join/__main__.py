import sys

from penetrator.sandbox.join.program import main

sys.exit(main())
