"""pytest plugin of keel's S3 compatibility harness (bench/compat): loaded with
`-p keel_compat_plugin`, it changes neither the suite's files nor its requests. It records, for every
test, when it started, the suite's marks on it, and the HTTP exchanges it made (method, path, status; or the exception when
no answer came), and puts them in the test's junit XML properties, so that the harness can say
which status codes a failing test saw and which test was running when the origin reported a fault.
Exchanges of the setup and teardown (the suite's bucket cleanup) are listed only when that phase
failed.

boto3 (through botocore) and requests both send through urllib3's connection pools, so one wrapper
around HTTPConnectionPool.urlopen sees every request a test makes.

It also gives each test a bucket prefix of its own. The suite picks one prefix per session and,
before and after every test, removes all buckets with it: one bucket a test's cleanup cannot remove
(an origin or gateway error) would then fail the setup of every later test, and the run would
measure that one defect hundreds of times. With a prefix per test, the test that left the bucket
gets the teardown error, and the others run as they would alone.
"""
import configparser
import os
import sys
import time

import pytest
import urllib3.connectionpool

# Per phase, at most this many exchanges are listed; the rest are counted.
MAX_LISTED = 40
MAX_PATH = 160

_state = {"exchanges": None}


def _record(method, url, outcome):
    exchanges = _state["exchanges"]
    if exchanges is None:
        return
    exchanges.append("%s %s -> %s" % (method, url if len(url) <= MAX_PATH else url[:MAX_PATH] + "...", outcome))


_original_urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen


def _urlopen(self, method, url, *args, **kwargs):
    try:
        response = _original_urlopen(self, method, url, *args, **kwargs)
    except Exception as e:
        _record(method, url, type(e).__name__)
        raise
    _record(method, url, response.status)
    return response


urllib3.connectionpool.HTTPConnectionPool.urlopen = _urlopen


def _fresh_bucket_prefix():
    suite = sys.modules.get("s3tests.functional")
    if suite is None:
        return
    cfg = configparser.RawConfigParser()
    cfg.read(os.environ["S3TEST_CONF"])
    template = cfg.get("fixtures", "bucket prefix", fallback="test-{random}-")
    suite.prefix = suite.choose_bucket_prefix(template=template)


def _phase(item, name):
    _state["exchanges"] = []
    started = time.time()
    if name == "setup":
        item.user_properties.append(("started_at_ms", str(int(started * 1000))))
        # The suite's own marks (fails_on_aws, fails_on_rgw …) say which behaviour a test expects.
        marks = sorted({m.name for m in item.iter_markers()} - {"parametrize", "timeout"})
        if marks:
            item.user_properties.append(("markers", ",".join(marks)))
    return started


def _end_phase(item, name, outcome):
    exchanges = _state["exchanges"] or []
    _state["exchanges"] = None
    if name != "call" and outcome.excinfo is None:
        return
    for line in exchanges[:MAX_LISTED]:
        item.user_properties.append(("http_" + name, line))
    if len(exchanges) > MAX_LISTED:
        item.user_properties.append(("http_" + name, "... %d more" % (len(exchanges) - MAX_LISTED)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _fresh_bucket_prefix()
    _phase(item, "setup")
    outcome = yield
    _end_phase(item, "setup", outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _phase(item, "call")
    outcome = yield
    _end_phase(item, "call", outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    _phase(item, "teardown")
    outcome = yield
    _end_phase(item, "teardown", outcome)
    item.user_properties.append(("ended_at_ms", str(int(time.time() * 1000))))
