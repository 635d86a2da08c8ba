import sys

from penetrator.sandbox.nodeagent.agent import main

main(sys.argv[1])
