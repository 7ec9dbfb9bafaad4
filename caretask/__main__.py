from caretask.cli import main

raise SystemExit(main())
