import sys

from penetrator_dev.sandbox.nodeagent.agent import main

main(sys.argv[1])
