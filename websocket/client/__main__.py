"""`python3 -m websocket.client ws://127.0.0.1:8080/`: the terminal chat (terminal.py)."""
import sys

from .terminal import main

sys.exit(main())
