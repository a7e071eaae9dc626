from unlearnable.cli import main

raise SystemExit(main())
