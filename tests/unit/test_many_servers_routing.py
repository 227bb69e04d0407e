"""Routing between several servers of one role, against real HTTP servers on 127.0.0.1 (the fault server).

The fewest requests in flight wins, a refused connection sets a server aside and the request goes to
another at once, a set-aside server is probed again only after its back-off (a fake clock here) and
comes back when it answers, and the per-server counters say what happened. One server behaves as before
(no health checks). tests/vllm/test_many_servers.py does the same against real vLLM servers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import pytest

from reer_assets.backends.config import BackendSpec
from reer_assets.backends.openai_compat import BackendCallError, OpenAIClient, OpenAIGenerator, http_usage, server_urls
from reer_assets.core.protocols import GenerationRequest, Sampling
from tests.support import fault_server
from tests.support.fault_server import FaultServer


def _request(k: int = 0) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": f"Write about rain. item {k}"}], "<think>\n", 1,
                             Sampling(max_tokens=32), seed=k)


def _serve_on(port: int) -> FaultServer:
    """A fault server on a given port (a server that comes back where it was)."""
    server = FaultServer()
    server.httpd.server_close()
    server.httpd = ThreadingHTTPServer(("127.0.0.1", port), fault_server._handler(server))
    server.httpd.daemon_threads = True
    server.thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    return server.start()


@pytest.fixture
def servers():
    started = [FaultServer(slow_s=0.3).start(), FaultServer(slow_s=0.3).start()]
    yield started
    for server in started:
        try:
            server.stop()
        except OSError:
            pass


def test_base_url_lists():
    assert server_urls("http://a:1/v1") == ["http://a:1/v1"]
    assert server_urls(" http://a:1/v1/ , http://b:2/v1,,http://a:1/v1") == ["http://a:1/v1", "http://b:2/v1"]


def test_requests_go_to_the_server_with_the_fewest_in_flight(servers):
    a, b = servers
    client = OpenAIClient(BackendSpec(backend="openai", model="m", base_url=f"{a.base_url},{b.base_url}",
                                      max_in_flight=8))
    generator = OpenAIGenerator(client, "m")
    generator.generate([_request(0)])  # health-checks both servers (one after the other), then goes to the first

    def sent() -> dict[str, int]:
        return {url: c["requests"] for url, c in client.usage.servers.items()}

    assert sent() == {a.base_url: 1, b.base_url: 0}
    for server in servers:
        server.slow_s = 1.0  # long enough for all eight to be in flight at once, even on a loaded machine
        server.on("item", "slow")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda k: generator.generate([_request(k)]), range(1, 9)))
    assert sent() == {a.base_url: 5, b.base_url: 4}
    assert a.max_in_flight_seen == b.max_in_flight_seen == 4
    for server in servers:
        server.rules.clear()
    generator.generate([_request(9)])
    generator.generate([_request(10)])  # one at a time: the one sent fewer, then alternating
    assert sent() == {a.base_url: 6, b.base_url: 5}
    assert http_usage(generator, generator)["servers"] == client.usage.servers


def test_a_dead_server_is_set_aside_probed_after_its_backoff_and_comes_back(servers):
    a, b = servers
    port = b.httpd.server_address[1]
    b.stop()  # refuses connections from now on
    now = [100.0]
    client = OpenAIClient(BackendSpec(backend="openai", model="m", base_url=f"{a.base_url},{b.base_url}", backoff_s=1.0,
                                      backoff_max_s=8.0), clock=lambda: now[0])
    generator = OpenAIGenerator(client, "m")
    for k in range(3):
        assert generator.generate([_request(k)])[0][0].text
    usage = client.usage.servers
    assert usage[b.base_url] == {"requests": 0, "failures": 0, "set_asides": 1}  # its health check failed
    assert usage[a.base_url]["requests"] == 3 and client.usage.failures == 0
    now[0] += 1.5  # past its back-off: probed again, still dead, set aside for twice as long
    generator.generate([_request(4)])
    assert usage[b.base_url]["set_asides"] == 2
    now[0] += 1.5  # within the doubled back-off: not probed
    generator.generate([_request(5)])
    assert usage[b.base_url]["set_asides"] == 2
    back = _serve_on(port)
    try:
        now[0] += 1.0  # due: probed, healthy, back in rotation and sent requests again
        for k in range(6, 10):
            generator.generate([_request(k)])
        assert usage[b.base_url]["requests"] >= 1 and back.count(path="chat") == usage[b.base_url]["requests"]
    finally:
        back.stop()
    # dies with requests to send: the one that reached it is refused, and sent to the other at once
    before = client.usage.failovers
    for k in range(10, 14):
        generator.generate([_request(k)])
    assert client.usage.failovers == before + 1 and usage[b.base_url]["failures"] == 1
    assert usage[b.base_url]["set_asides"] == 3 and client.usage.failures == 0 and client.usage.retries == 0


def test_every_server_dead_fails_after_the_attempts(servers):
    a, b = servers
    urls = f"{a.base_url},{b.base_url}"
    a.stop()
    b.stop()
    client = OpenAIClient(BackendSpec(backend="openai", model="m", base_url=urls, max_attempts=3, backoff_s=0.01,
                                      backoff_max_s=0.02))
    with pytest.raises(BackendCallError) as caught:
        OpenAIGenerator(client, "m").generate([_request()])
    assert caught.value.error_class == "connection_error" and caught.value.attempts == 3
    assert client.usage.failures == 1


def test_one_server_has_no_health_checks(servers):
    a, _ = servers
    client = OpenAIClient(BackendSpec(backend="openai", model="m", base_url=a.base_url))
    OpenAIGenerator(client, "m").generate([_request()])
    assert [p for p, _ in a.log] == ["/v1/chat/completions"]
    assert client.usage.servers == {a.base_url: {"requests": 1, "failures": 0, "set_asides": 0}}
    assert http_usage(object()) == {}
