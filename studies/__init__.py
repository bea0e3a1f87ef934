"""Studies: one-off experiments (NEU-DET protocols, DASC-YOLO diagnostics, synthetic budgets), kept
with their results and ledger under ``studies/results``; see ``studies/README.md``."""
