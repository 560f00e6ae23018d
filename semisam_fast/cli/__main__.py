"""`python -m semisam_fast.cli` (what torchrun runs)."""
from . import main

main()
