"""Where the shipped weights live (``assets/weights/`` of the checkout or the installed package).

A module of its own so that both :mod:`.portrait` (delta checkpoints name shipped bases by file
name) and :mod:`.shipped` (which weights are installed) read it without importing each other.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "weights"
