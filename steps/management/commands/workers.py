"""List the worker registry: each worker cluster's state, queues, capacity and load."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from steps import workers
from steps.models import WorkerCluster
from steps.workers_api import WorkerSerializer


class Command(BaseCommand):
    help = (
        "List registered worker clusters (those gone too with --all): name, state, queues, "
        "load/capacity, seconds since the last heartbeat, host."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--all", action="store_true", help="Gone workers too.")
        parser.add_argument("--json", action="store_true", help="Print the API's JSON instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        rows = [
            row
            for row in workers.with_load(WorkerCluster.objects.order_by("name"))
            if options["all"] or workers.state(row, now) != "gone"
        ]
        if options["json"]:
            data = WorkerSerializer(rows, many=True, context={"now": now}).data
            self.stdout.write(json.dumps(data, cls=JSONEncoder, indent=2))
        elif not rows:
            self.stdout.write("no workers" if options["all"] else "no live workers")
        else:
            for row in rows:
                age = (now - row.last_heartbeat).total_seconds()
                self.stdout.write(
                    f"{row.name}  {workers.state(row, now)}  queues={','.join(row.queues)}  "
                    f"load={row.load}/{row.capacity}  heartbeat={age:.0f}s ago  host={row.host}"
                )
