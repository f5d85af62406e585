from repoforge.cli import main

main()
