"""`python -m igoas ...` and `torchrun -m igoas ...` enter the same CLI as the `igoas` script."""
from igoas.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
