from penetrator.cli.main import main

main()
