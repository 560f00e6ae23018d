"""`python -m semisam_fast ...` runs the command line (as `semisam-fast ...` does; torchrun lines can use it)."""
from semisam_fast.cli import main

if __name__ == "__main__":
    main()
