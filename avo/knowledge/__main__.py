from avo.knowledge.cli import main

raise SystemExit(main())
