from clearbg.cli import main

main()
