"""``python -m rtml._control``: run a control-plane (GCS) server; see ``_server.main``."""

from rtml._control._server import main

if __name__ == "__main__":
    main()
