"""``python -m encmigrate`` runs the command line."""

from encmigrate.cli import main

if __name__ == "__main__":
    main()
