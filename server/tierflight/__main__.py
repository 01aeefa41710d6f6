from tierflight.cli import main

main()
