from mlship.cli import main

main()
