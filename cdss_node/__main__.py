from cdss_node.cli import main

raise SystemExit(main())
