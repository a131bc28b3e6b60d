"""``python -m rtml ...``: the same commands as the ``rtml`` console script."""

from rtml.cli import main

if __name__ == "__main__":
    main()
