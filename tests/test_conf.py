"""``django_runway_feed.conf``: the settings the app reads, each in one place."""

from __future__ import annotations

import pytest

from django_runway_feed.conf import q_cluster


def test_q_cluster_is_the_sites_dict(settings):
    settings.Q_CLUSTER = {"name": "site", "orm": "default", "workers": 1}

    assert q_cluster() == {"name": "site", "orm": "default", "workers": 1}


@pytest.mark.parametrize("value", [None, "orm", ["orm"]])
def test_q_cluster_not_a_dict_is_none(settings, value):
    settings.Q_CLUSTER = value

    assert q_cluster() is None


def test_q_cluster_unset_is_none(settings):
    del settings.Q_CLUSTER

    assert q_cluster() is None
