from mlenv.cli.app import main

main()
