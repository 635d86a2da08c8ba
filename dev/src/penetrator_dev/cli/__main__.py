from penetrator_dev.cli.main import main

main()
