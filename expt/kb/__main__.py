"""``python -m expt.kb``: rebuild the knowledge base (what ``make kb`` runs)."""

from expt.kb.build import main

main()
