from avsync.cli import main

main()
