"""`manage.py preflight`: is the database reachable (else exit 1, one line), and Redis (one line)?"""

import sys

from django.core.management.base import BaseCommand

from biogram import preflight


class Command(BaseCommand):
    help = (
        "Check that DATABASE_URL (and REDIS_URL, if set) can be reached; one line for each problem."
    )
    requires_system_checks = []

    def handle(self, *args, **options):
        if not preflight.run():
            sys.exit(1)
