import sys

from nwcache.client.cli import main

sys.exit(main())
