"""``python -m hwnas`` runs the command line (also what ``torchrun -m hwnas`` starts)."""

from hwnas.cli import app

app()
