from unlearnable.app.cli import main

raise SystemExit(main())
