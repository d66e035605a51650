"""Django's system checks in tests, without handing Django's own checks a database."""

from __future__ import annotations

from django.core.checks import CheckMessage, run_checks


def checks_without_databases(*, deploy: bool = False) -> list[CheckMessage]:
    """Every registered check (``deploy``: the deployment ones too), with ``databases=[]``.

    On Django 6.1 ``run_checks()`` hands every database alias to the model checks when it is given
    none, and they open a connection: a test without a database would fail there only. This
    app's deploy checks still read the default database, so ``deploy=True`` needs ``django_db``.
    """
    return run_checks(include_deployment_checks=deploy, databases=[])
