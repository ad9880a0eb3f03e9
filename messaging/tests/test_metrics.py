"""/metrics: every family the operations guide promises, moving as a socket lives."""

from prometheus_client.parser import text_string_to_metric_families

from conftest import db_call


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_a_sockets_life_and_a_messages_fan_out(
    client, user, other_user, chat, connect
):
    before = await db_call(scrape)(client)
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("message", chatId=str(chat.pk), text="hello", clientMessageId="m1")
    await bob.receive_type("message")
    await alice.send_raw("not json")
    await alice.receive_type("error")
    await bob.send("disconnect")
    assert await bob.closed_with() == 1000
    await bob.communicator.disconnect()
    after = await db_call(scrape)(client)

    def grew(name, by=1, **labels):
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    grew("biogram_socket_connects_total", 2)
    grew("biogram_socket_disconnects_total", code="1000")
    grew("biogram_frames_in_total", type="message")
    grew("biogram_frames_in_total", type="invalid")
    grew("biogram_frames_in_total", type="disconnect")
    grew("biogram_errors_total", code="bad_request")
    grew("biogram_messages_stored_total")
    grew("biogram_fanout_seconds_count")
    assert value(after, "biogram_open_sockets") - value(before, "biogram_open_sockets") == 1
    for family in (
        "biogram_layer_send_failures_total",
        "biogram_slow_client_disconnects_total",
        "biogram_rate_limited_total",
    ):
        assert (family, ()) in after, family


async def test_rate_limit_hits_are_counted(client, user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 1
    settings.RATE_LIMIT_PER_SECOND = 0.001
    before = await db_call(scrape)(client)
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="one", clientMessageId="r1")
    await alice.send("message", chatId=str(chat.pk), text="two", clientMessageId="r2")
    await alice.receive_type("error")
    after = await db_call(scrape)(client)

    assert (
        value(after, "biogram_rate_limited_total") - value(before, "biogram_rate_limited_total")
        == 1
    )
