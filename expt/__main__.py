from __future__ import annotations

from expt.cli import main

if __name__ == "__main__":
    main()
