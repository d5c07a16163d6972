import sys

from nwcache.client.remote import main

sys.exit(main())
