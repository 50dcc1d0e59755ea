from manyheads.cli.main import main

main()
